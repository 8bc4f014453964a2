package controllers

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func defaulted(mutate func(*cachev1alpha1.DiskCache)) *cachev1alpha1.DiskCache {
	dc := &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns"}}
	if mutate != nil {
		mutate(dc)
	}
	dc.Spec.Default()
	return dc
}

// loadServerConfig renders dc's cacheserver.conf and reads it with the
// real cacheserver config loader.
func loadServerConfig(t *testing.T, dc *cachev1alpha1.DiskCache) (cacheserver.Config, string) {
	t.Helper()
	conf, _ := serverConfig(dc)
	path := t.TempDir() + "/cacheserver.conf"
	if err := writeFile(path, conf); err != nil {
		t.Fatal(err)
	}
	cfg, err := cacheserver.LoadConfig([]string{"--config", path}, func(string) string { return "" })
	if err != nil {
		t.Fatalf("cacheserver rejects the operator's config: %v\n%s", err, conf)
	}
	return cfg, conf
}

// The rendered cacheserver.conf is read by the real cacheserver config loader.
func TestServerConfigLoadsInCacheserver(t *testing.T) {
	dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.SizeLimit = ptrTo(resource.MustParse("1.5Gi"))
		dc.Spec.EvictionPolicy = cachev1alpha1.EvictionLeastRecentlyUsed
		dc.Spec.CullLimit = ptrTo[int32](0)
		dc.Spec.Statistics = true
		dc.Spec.Fanout = 16
		dc.Spec.DatabaseTimeout = &metav1.Duration{Duration: 2500 * time.Millisecond}
		dc.Spec.MaxKeyBytes = ptrTo(resource.MustParse("4Ki"))
		dc.Spec.MaxValueBytes = ptrTo(resource.MustParse("1e9"))
		dc.Spec.FsyncValueFiles = true
		dc.Spec.HotValueBytes = ptrTo(resource.MustParse("8Mi"))
		dc.Spec.PageSize = ptrTo[int32](4096)
		dc.Spec.Monitoring.RequireToken = true
	})
	cfg, conf := loadServerConfig(t, dc)
	if cfg.DataDir != "/data/cache" || cfg.Listen != ":8080" || cfg.HealthListen != ":8081" || cfg.TokenFile != TokenPath || cfg.Fanout != 16 ||
		cfg.DatabaseTimeout != 2500*time.Millisecond || cfg.MaxKeyBytes != 4096 || cfg.MaxValueBytes != 1e9 ||
		cfg.SizeLimit != 1610612736 || cfg.EvictionPolicy != "least-recently-used" || cfg.CullLimit != 0 || !cfg.Statistics ||
		cfg.TagIndex || cfg.DiskMinFileSize != 32768 || cfg.TLSCert != "" || !cfg.FsyncValueFiles || !cfg.MetricsRequireToken ||
		cfg.HotValueBytes != 8<<20 || cfg.PageSize != 4096 {
		t.Errorf("cacheserver read %+v from\n%s", cfg, conf)
	}
	given := cfg.EngineSettings().Values()
	for _, name := range []settings.Name{"size_limit", "eviction_policy", "cull_limit", "statistics", "tag_index", "disk_min_file_size"} {
		if _, ok := given[name]; !ok {
			t.Errorf("engine setting %s not given explicitly, so a restart would not restore it", name)
		}
	}
}

// Quantities past int64 in any notation ("1e19" as well as "10Ei") reach
// the servers as the largest byte count, not as 0 (Quantity.Value's answer
// for "1e19"): a size limit of 0 culls everything, a value limit of 0
// stops the server from starting.
func TestHugeQuantitiesSaturate(t *testing.T) {
	for _, huge := range []string{"1e19", "100E", "10Ei", "1e30"} {
		dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
			q := resource.MustParse(huge)
			dc.Spec.SizeLimit, dc.Spec.MaxValueBytes, dc.Spec.HotValueBytes = &q, &q, &q
			dc.Spec.DiskMinFileSize, dc.Spec.Rebalance.Rate = &q, &q
			dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
		})
		cfg, conf := loadServerConfig(t, dc)
		const most = math.MaxInt64
		if cfg.SizeLimit != most || cfg.MaxValueBytes != most || cfg.HotValueBytes != most || cfg.DiskMinFileSize != most || cfg.RebalanceRate != most {
			t.Errorf("%s: cacheserver read %+v from\n%s", huge, cfg, conf)
		}
		if memoryProblem(dc) == nil {
			t.Errorf("%s: hot values of %s fit a 1Gi memory limit", huge, huge)
		}
	}
}

func TestConfigHashIgnoresLiveSettings(t *testing.T) {
	_, base := serverConfig(defaulted(nil))
	live := []func(*cachev1alpha1.DiskCache){
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.SizeLimit = ptrTo(resource.MustParse("5Gi")) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.EvictionPolicy = cachev1alpha1.EvictionNone },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.CullLimit = ptrTo[int32](1) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.Statistics = true },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.TagIndex = true },
	}
	for i, m := range live {
		conf, restart := serverConfig(defaulted(m))
		if restart != base {
			t.Errorf("live change %d changed the start-up part:\n%s", i, restart)
		}
		if c0, _ := serverConfig(defaulted(nil)); conf == c0 {
			t.Errorf("live change %d did not reach the file", i)
		}
	}
	restart := []func(*cachev1alpha1.DiskCache){
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.Fanout = 4 },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.DatabaseTimeout = &metav1.Duration{Duration: time.Minute} },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.DiskMinFileSize = ptrTo(resource.MustParse("1Mi")) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.MaxKeyBytes = ptrTo(resource.MustParse("1Ki")) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.MaxValueBytes = ptrTo(resource.MustParse("1Mi")) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.FsyncValueFiles = true },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.HotValueBytes = ptrTo(resource.MustParse("0")) },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.Monitoring.RequireToken = true },
		func(dc *cachev1alpha1.DiskCache) { dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "s"} },
	}
	for i, m := range restart {
		if _, r := serverConfig(defaulted(m)); r == base {
			t.Errorf("start-up change %d did not change the hashed part", i)
		}
	}
}

func TestLiveSettingsDiff(t *testing.T) {
	want := liveSettings(&defaulted(func(dc *cachev1alpha1.DiskCache) { dc.Spec.Statistics = true }).Spec)
	var current settings.Settings
	// As the server answers.
	if err := json.Unmarshal([]byte(`{"size_limit":1073741824,"eviction_policy":"least-recently-stored","cull_limit":10,"statistics":false,"tag_index":false,"sqlite_mmap_size":67108864}`), &current); err != nil {
		t.Fatal(err)
	}
	diff := want.Diff(current)
	if !diff.Equal(settings.Settings{Statistics: settings.Ptr(true)}) {
		t.Errorf("diff %v, want only statistics", diff)
	}
	current.Statistics = settings.Ptr(true)
	if d := want.Diff(current); !d.IsZero() {
		t.Errorf("diff %v, want none", d)
	}
	current.CullLimit = nil
	if d := want.Diff(current); !d.Equal(settings.Settings{CullLimit: settings.Ptr[int64](10)}) {
		t.Errorf("missing setting: diff %v", d)
	}
}

func TestSubset(t *testing.T) {
	var have map[string]any
	_ = json.Unmarshal([]byte(`{"spec":{"replicas":3,"template":{"spec":{"dnsPolicy":"ClusterFirst",
		"containers":[{"name":"sidecar","image":"s"},{"name":"cacheserver","image":"a","args":["--config","x"],"terminationMessagePath":"/dev/termination-log"}],
		"tolerations":[{"key":"a"},{"key":"b"}]}}}}`), &have)
	cases := []struct {
		want string
		ok   bool
	}{
		{`{"spec":{"replicas":3}}`, true},
		{`{"spec":{"replicas":4}}`, false},
		{`{"spec":{"template":{"spec":{"containers":[{"name":"cacheserver","image":"a"}]}}}}`, true},
		{`{"spec":{"template":{"spec":{"containers":[{"name":"cacheserver","image":"b"}]}}}}`, false},
		{`{"spec":{"template":{"spec":{"containers":[{"name":"cacheserver","args":["--config"]}]}}}}`, false},
		{`{"spec":{"template":{"spec":{"tolerations":[{"key":"a"},{"key":"b"}]}}}}`, true},
		{`{"spec":{"template":{"spec":{"tolerations":[{"key":"a"}]}}}}`, false},
		{`{"spec":{"template":{"spec":{"nodeSelector":{"a":"b"}}}}}`, false},
		{`{"spec":{"template":{"spec":{"nodeSelector":{}}}}}`, true},
	}
	for _, c := range cases {
		var want map[string]any
		if err := json.Unmarshal([]byte(c.want), &want); err != nil {
			t.Fatal(err)
		}
		if got := subset(want, have); got != c.ok {
			t.Errorf("subset(%s) = %v, want %v", c.want, got, c.ok)
		}
	}
}

func TestEndpointAndSelector(t *testing.T) {
	dc := defaulted(nil)
	if e := endpoint(dc); e != "http://c.ns.svc:8080" {
		t.Errorf("endpoint %s", e)
	}
	dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "tls"}
	if e := endpoint(dc); !strings.HasPrefix(e, "https://") {
		t.Errorf("endpoint %s with TLS", e)
	}
	if s := selectorString(dc); s != "app.kubernetes.io/component=cacheserver,app.kubernetes.io/instance=c,app.kubernetes.io/name=diskcache" {
		t.Errorf("selector %s", s)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

// TestProbesAskTheHealthPort: the kubelet's probes, the health port the
// server is told to serve (--health-listen) and the container port they
// name agree, and none asks the data port, where --max-connections
// applies; the probes speak TLS when the server does.
func TestProbesAskTheHealthPort(t *testing.T) {
	for _, tls := range []bool{false, true} {
		dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
			if tls {
				dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "tls"}
			}
		})
		cfg, _ := loadServerConfig(t, dc)
		ct := buildStatefulSet(dc, "img", "h", false, nil).Spec.Template.Spec.Containers[0]
		ports := map[string]int32{}
		for _, p := range ct.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if cfg.HealthListen != fmt.Sprintf(":%d", ports[HealthPortName]) || ports[HealthPortName] == ports[PortName] {
			t.Fatalf("--health-listen %q, container ports %v", cfg.HealthListen, ports)
		}
		wantScheme := corev1.URISchemeHTTP
		if tls {
			wantScheme = corev1.URISchemeHTTPS
		}
		for name, p := range map[string]*corev1.Probe{"startup": ct.StartupProbe, "liveness": ct.LivenessProbe, "readiness": ct.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port != intstr.FromString(HealthPortName) || p.HTTPGet.Scheme != wantScheme {
				t.Errorf("tls %v: %s probe %+v, want the %s port over %s", tls, name, p, HealthPortName, wantScheme)
			}
		}
	}
}
