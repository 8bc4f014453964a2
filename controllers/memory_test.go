package controllers

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// The estimate counts what the server really defaults to, and a server
// whose container has exactly the estimate (--memory-limit, as the pod
// template passes it) gives its Go heap the heap's share of it, hot values
// and settings.MemoryGoBaseline: it subtracts what the estimate counts
// outside the heap, from the databases it really opened.
func TestMemoryEstimateFollowsTheServer(t *testing.T) {
	cfg := cacheserver.DefaultConfig()
	if cfg.HotValueBytes != serverDefaultHotValueBytes || cfg.PageSize != serverDefaultPageSize {
		t.Errorf("server defaults hot %d page %d; the estimate assumes %d and %d", cfg.HotValueBytes, cfg.PageSize, serverDefaultHotValueBytes, serverDefaultPageSize)
	}
	if s := engine.DefaultSettings(); s.SQLiteCacheSize != settings.SQLiteCachePages {
		t.Errorf("engine cache_size %d pages; the estimate assumes %d", s.SQLiteCacheSize, settings.SQLiteCachePages)
	}

	// The server sets the process's Go memory limit: put it back, and
	// keep a GOMEMLIMIT of the test's environment from winning.
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	for _, dc := range []*cachev1alpha1.DiskCache{defaulted(nil), defaulted(func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.HotValueBytes = ptrTo(resource.MustParse("96Mi"))
		dc.Spec.Fanout = 3
		dc.Spec.PageSize = ptrTo[int32](4096)
	})} {
		total, hot, _ := memoryEstimate(&dc.Spec)
		cfg := cacheserver.DefaultConfig()
		cfg.DataDir, cfg.InsecureNoAuth = t.TempDir(), true
		cfg.Fanout, cfg.HotValueBytes, cfg.MemoryLimit = int(dc.Spec.Fanout), hot, total
		if dc.Spec.PageSize != nil {
			cfg.PageSize = int(*dc.Spec.PageSize)
		}
		srv, err := cacheserver.New(bg, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/config", nil))
		_ = srv.Close()
		var got wire.ServerConfig
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("GET /v1/config: %d %s: %v", rec.Code, rec.Body, err)
		}
		if want := hot + settings.MemoryGoBaseline; got.MemoryLimitBytes != total || got.GoMemoryLimitBytes != want {
			t.Errorf("fanout %d, page size %d, hot %d: a server with --memory-limit %d (the estimate) runs with the Go memory limit %d (config %+v), want %d",
				cfg.Fanout, cfg.PageSize, hot, total, got.GoMemoryLimitBytes, got, want)
		}
	}
}

func TestMemoryLimitTooLow(t *testing.T) {
	withLimit := func(limit string, mutate func(*cachev1alpha1.DiskCache)) *cachev1alpha1.DiskCache {
		return defaulted(func(dc *cachev1alpha1.DiskCache) {
			if limit != "" {
				dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
			}
			if mutate != nil {
				mutate(dc)
			}
		})
	}
	// The documented defaults: 32Mi + 8 × 8192 × 2048 (128Mi) + 48Mi.
	if total, _, _ := memoryEstimate(&withLimit("", nil).Spec); total != 208<<20 {
		t.Errorf("estimate with the defaults %d, want 208Mi", total)
	}
	p := memoryProblem(withLimit("128Mi", nil))
	if p == nil || p.reason != cachev1alpha1.ReasonMemoryLimitTooLow ||
		!strings.Contains(p.message, "spec.resources.limits.memory 128Mi is below the 208Mi a shard may use: hotValueBytes 32Mi + 8 fanout databases × 8192 SQLite cache pages of 2048 bytes (128Mi) + 48Mi") {
		t.Errorf("128Mi with the defaults: %+v", p)
	}
	p = memoryProblem(withLimit("96Mi", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.HotValueBytes = ptrTo(resource.MustParse("512Mi"))
		dc.Spec.Fanout = 2
		dc.Spec.PageSize = ptrTo[int32](4096)
	}))
	if p == nil || !strings.Contains(p.message, "96Mi is below the 624Mi a shard may use: hotValueBytes 512Mi + 2 fanout databases × 8192 SQLite cache pages of 4096 bytes (64Mi)") {
		t.Errorf("96Mi with hotValueBytes 512Mi: %+v", p)
	}
	// An object the API server did not default (fanout 0) is counted with
	// the default fanout, not divided by.
	if p := memoryProblem(withLimit("128Mi", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Fanout = 0 })); p == nil || !strings.Contains(p.message, "8 fanout databases") {
		t.Errorf("fanout 0: %+v", p)
	}
	for _, dc := range []*cachev1alpha1.DiskCache{withLimit("", nil), withLimit("208Mi", nil), withLimit("1Gi", nil),
		withLimit("96Mi", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.HotValueBytes = ptrTo(resource.MustParse("0"))
			dc.Spec.Fanout = 1
		})} {
		if p := memoryProblem(dc); p != nil {
			t.Errorf("limits %v, hot %v, fanout %d: %+v", dc.Spec.Resources.Limits, dc.Spec.HotValueBytes, dc.Spec.Fanout, p)
		}
	}

	var w memoryWarned
	if !w.fresh("dc", p) || w.fresh("dc", p) {
		t.Error("a problem was not reported once")
	}
	w.fresh("dc", nil)
	if !w.fresh("dc", p) {
		t.Error("a problem back after it was fixed was not reported")
	}
}

// A memory limit below the estimate makes the DiskCache Degraded, with the
// numbers, and raises a Warning Event.
func TestMemoryLimitTooLowIsReported(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "small", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.HotValueBytes = ptrTo(resource.MustParse("512Mi"))
		dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("96Mi")}
	})
	const note = "spec.resources.limits.memory 96Mi is below the 688Mi a shard may use"
	eventually(t, "Degraded: MemoryLimitTooLow", func() error {
		dc := get(t, ns, "small", &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonMemoryLimitTooLow); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(strings.Contains(c.Message, note), "message %q", c.Message)
	})
	eventually(t, "MemoryLimitTooLow event", func() error {
		return findEventNote(t, ns, "small", cachev1alpha1.ReasonMemoryLimitTooLow, note)
	})
	updateDiskCache(t, ns, "small", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
	})
	eventually(t, "no longer MemoryLimitTooLow", func() error {
		dc := get(t, ns, "small", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(c != nil && c.Reason != cachev1alpha1.ReasonMemoryLimitTooLow, "Degraded %+v", c)
	})
}

// The pod template hands the server the container's memory limit through
// the downward API, in the variable the server reads as --memory-limit;
// without a limit in the spec it hands nothing, as the downward API would
// then answer the node's allocatable memory.
func TestPodTemplatePassesTheMemoryLimit(t *testing.T) {
	for _, limit := range []string{"", "512Mi", "1G"} {
		dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
			if limit != "" {
				dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
			}
		})
		ct := buildStatefulSet(dc, "img", "h", false, nil).Spec.Template.Spec.Containers[0]
		// What the kubelet puts in the environment: a fieldRef's value is
		// not needed here; a resourceFieldRef's is the limit of the
		// container it names divided by the divisor, rounded up, and the
		// node's allocatable memory when the container has no limit.
		const nodeAllocatable = 62 << 30
		env := map[string]string{}
		for _, e := range ct.Env {
			if f := e.ValueFrom.ResourceFieldRef; f != nil {
				if f.ContainerName != ct.Name || f.Resource != "limits.memory" {
					t.Fatalf("limit %q: %s from %+v, want limits.memory of container %s", limit, e.Name, f, ct.Name)
				}
				v := int64(nodeAllocatable)
				if q, ok := ct.Resources.Limits[corev1.ResourceMemory]; ok {
					v = q.Value()
				}
				env[e.Name] = strconv.FormatInt(int64(math.Ceil(float64(v)/float64(f.Divisor.Value()))), 10)
			}
		}
		cfg, err := cacheserver.LoadConfig([]string{"--data-dir", "/data", "--insecure-no-auth"}, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		if limit != "" {
			q := resource.MustParse(limit)
			want = q.Value()
		}
		if cfg.MemoryLimit != want {
			t.Errorf("limits.memory %q: the server reads --memory-limit %d from the environment %v, want %d", limit, cfg.MemoryLimit, env, want)
		}
	}
}
