package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// The envtest control plane (a real etcd and kube-apiserver built from Go
// modules by hack/envtest.sh) and a manager running the reconciler, shared
// by the tests of this package. Each test works in its own namespace.
var (
	testEnv    *envtest.Environment
	restCfg    *rest.Config
	testScheme = runtime.NewScheme()
	k8s        client.Client // direct client (no cache)
	mgrClient  client.Client // the manager's cached client
	mgrCache   client.Reader
	reconciler *DiskCacheReconciler
	envMissing string
	testImage  = "registry.example/diskcache:test"
	// As if started with --cacheserver-image-pull-secrets=operator-pull.
	testImagePullSecrets = []corev1.LocalObjectReference{{Name: "operator-pull"}}

	testOperatorNamespace = "diskcache-system"

	// podAddrs maps "namespace/pod" to the URL of a cacheserver process
	// standing in for that pod; other pods resolve to a closed port.
	podAddrs sync.Map
	// settingsCalls counts resolutions of pod addresses per "namespace/pod".
	settingsCalls sync.Map
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(cachev1alpha1.AddToScheme(testScheme))
}

// envtestAssets finds the control plane binaries: $KUBEBUILDER_ASSETS, or
// bin/envtest of the repository.
func envtestAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	dir, _ := filepath.Abs(filepath.Join("..", "bin", "envtest"))
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err == nil {
		return dir
	}
	return ""
}

func TestMain(m *testing.M) {
	code := runTests(m)
	testserver.RemoveBinary()
	os.Exit(code)
}

func runTests(m *testing.M) int {
	assets := envtestAssets()
	if assets == "" {
		envMissing = "no envtest binaries: run `make envtest` (or set KUBEBUILDER_ASSETS)"
		return m.Run()
	}
	// The operator's log goes to a buffer, printed when a test fails (or
	// always with TEST_VERBOSE_OPERATOR=1).
	var logBuf syncBuffer
	var logOut io.Writer = &logBuf
	if os.Getenv("TEST_VERBOSE_OPERATOR") != "" {
		logOut = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logOut), zap.Level(zapLevel())))
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest start:", err)
		return 1
	}
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "envtest stop:", err)
		}
	}()
	restCfg = cfg
	if k8s, err = client.New(cfg, client.Options{Scheme: testScheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// The shared manager's maintenance clock is frozen and never moved, so
	// no scheduled run happens; a test that moves time runs its own
	// manager with its own clock (startTestManager).
	mgr, r, err := newTestManager(cfg, testCacheOptions(),
		newTestMaintenance(clocktesting.NewFakePassiveClock(time.Now())))
	reconciler = r
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgrClient, mgrCache = mgr.GetClient(), mgr.GetCache()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if err := warmUp(); err != nil {
		fmt.Fprintln(os.Stderr, "warm-up:", err)
		cancel()
		<-done
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "operator log (errors):\n%s\n", logBuf.String())
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	return code
}

// newTestManager builds a manager running a DiskCacheReconciler with the
// tests' settings and maint.
func newTestManager(cfg *rest.Config, cacheOpts cache.Options, maint *maintenance.Scheduler) (ctrl.Manager, *DiskCacheReconciler, error) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		return nil, nil, err
	}
	rm, err := NewRebalanceMetrics(ctrlmetrics.Registry)
	if err != nil {
		return nil, nil, err
	}
	r := &DiskCacheReconciler{
		Metrics:                 rm,
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder(ManagerName),
		DefaultImage:            testImage,
		DefaultImagePullSecrets: testImagePullSecrets,
		PodAddress:              testPodAddress,
		ShardURL:                testShardURL,
		SettingsTimeout:         5 * time.Second,
		Maintenance:             maint,
		// As if the operator ran in the pods of config/manager.
		OperatorNamespace: testOperatorNamespace,
		// TestServiceMonitorOnlyWithItsAPI waits for this.
		ServiceMonitorRecheck: time.Second,
		// TestRotationInAUserSecretShows waits for this.
		UserSecretPoll: time.Second,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	return mgr, r, nil
}

// newTestMaintenance is a maintenance Scheduler on clk, with its own memory
// of past runs.
func newTestMaintenance(clk clock.PassiveClock) *maintenance.Scheduler {
	return &maintenance.Scheduler{
		Clock:  clk,
		Runner: &maintenance.Runner{Clock: clk, ShardTimeout: 5 * time.Second, Retries: -1},
	}
}

// startTestManager runs a manager of the test's own until the test ends: it
// reconciles only the DiskCaches in ns labelled otherManagerLabel=label
// (which the shared manager leaves alone), with maint, so a test can move
// its clock without touching any other test.
func startTestManager(t *testing.T, ns, label string, maint *maintenance.Scheduler) {
	t.Helper()
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	opts.ByObject[&cachev1alpha1.DiskCache{}] = cache.ByObject{Label: klabels.SelectorFromSet(klabels.Set{otherManagerLabel: label})}
	mgr, _, err := newTestManager(restCfg, opts, maint)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the test's manager: %v", err)
		}
	})
}

// otherManagerLabel marks DiskCaches that the test manager leaves alone,
// for tests that run another reconciler (with other credentials, or the
// manager binary) and must see its writes, not the test manager's.
const otherManagerLabel = "test.cache.diskcache.dev/other-manager"

func testCacheOptions() cache.Options {
	opts := CacheOptions()
	sel, err := klabels.Parse("!" + otherManagerLabel)
	if err != nil {
		panic(err)
	}
	opts.ByObject[&cachev1alpha1.DiskCache{}] = cache.ByObject{Label: sel}
	return opts
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE_OPERATOR") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel // failing tests print their own context
}

func testPodAddress(dc *cachev1alpha1.DiskCache, pod *corev1.Pod) string {
	key := pod.Namespace + "/" + pod.Name
	n, _ := settingsCalls.LoadOrStore(key, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	if u, ok := podAddrs.Load(key); ok {
		return u.(string)
	}
	return "http://127.0.0.1:1" // nothing listens: a call here fails
}

// testShardURL puts the URL of the cacheserver process standing in for a
// pod into the topology, so the servers reach each other; shards without a
// process get their real DNS name.
func testShardURL(dc *cachev1alpha1.DiskCache, shard int) string {
	if u, ok := podAddrs.Load(fmt.Sprintf("%s/%s-%d", dc.Namespace, dc.Name, shard)); ok {
		return u.(string)
	}
	return (&DiskCacheReconciler{}).shardURL(dc, shard)
}

func ptrTo[T any](v T) *T { return &v }

// needEnv skips a test when the envtest binaries are missing (`make test`
// always builds them first, so there it never skips), or fails it when
// DISKCACHE_REQUIRE_ENVTEST is set (CI).
func needEnv(t *testing.T) {
	t.Helper()
	if envMissing != "" {
		if os.Getenv("DISKCACHE_REQUIRE_ENVTEST") != "" {
			t.Fatal(envMissing + ", and DISKCACHE_REQUIRE_ENVTEST is set")
		}
		t.Skip(envMissing)
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "t-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	name = strings.ReplaceAll(name, "_", "-")
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.TrimRight(name, "-") + "-" + hex.EncodeToString(b)
	ns := &corev1.Namespace{}
	ns.Name = name
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// eventually polls f until it returns nil, failing the test with f's last
// error when the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 60s: %v", what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// countingTransport counts API requests by method.
type countingTransport struct {
	next  http.RoundTripper
	mu    sync.Mutex
	calls map[string]int
	log   []string
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[req.Method]++
	c.log = append(c.log, req.Method+" "+req.URL.Path)
	c.mu.Unlock()
	return c.next.RoundTrip(req)
}

func (c *countingTransport) snapshot() (map[string]int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.calls {
		out[k] = v
	}
	return out, append([]string(nil), c.log...)
}

func (c *countingTransport) reset() {
	c.mu.Lock()
	c.calls, c.log = nil, nil
	c.mu.Unlock()
}

// countingConfig is restCfg with every request counted.
func countingConfig() (*rest.Config, *countingTransport) {
	cfg := rest.CopyConfig(restCfg)
	ct := &countingTransport{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		ct.next = rt
		return ct
	})
	return cfg, ct
}

// warmUp waits until the manager reconciles a first DiskCache, so that the
// tests (and the latencies they report) see a started controller.
func warmUp() error {
	ns := &corev1.Namespace{}
	ns.Name = "warm-up"
	if err := k8s.Create(bg, ns); err != nil {
		return err
	}
	dc := &cachev1alpha1.DiskCache{}
	dc.Namespace, dc.Name = ns.Name, "warm-up"
	if err := k8s.Create(bg, dc); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := getChildren(ns.Name, dc.Name); err == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return errors.New("the controller did not create the children of a DiskCache within 60s")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
