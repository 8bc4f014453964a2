package maintenance

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by the manager.
const (
	MetricRuns         = "diskcache_maintenance_runs_total"
	MetricFailures     = "diskcache_maintenance_failures_total"
	MetricItemsRemoved = "diskcache_maintenance_items_removed_total"
	MetricLastDuration = "diskcache_maintenance_last_duration_seconds"
	MetricLastSuccess  = "diskcache_maintenance_last_success_timestamp_seconds"
)

// Kinds of removed items (the kind label).
const (
	KindExpired = "expired"
	KindCulled  = "culled"
)

// Metrics are the maintenance metrics of the manager, labelled by the
// DiskCache's namespace and name. Register them on controller-runtime's
// registry (sigs.k8s.io/controller-runtime/pkg/metrics.Registry) so the
// manager's /metrics serves them. A nil *Metrics records nothing.
type Metrics struct {
	runs         *prometheus.CounterVec
	failures     *prometheus.CounterVec
	removed      *prometheus.CounterVec
	lastDuration *prometheus.GaugeVec
	lastSuccess  *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered). Collectors already registered there (a second reconciler in
// one process, as in tests) are shared rather than failing.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"namespace", "name"}
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRuns,
			Help: "Maintenance runs (expire and cull on every shard) of a DiskCache.",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFailures,
			Help: "Maintenance runs of a DiskCache that failed on at least one shard.",
		}, labels),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricItemsRemoved,
			Help: "Items removed by maintenance, by kind: expired (past their expire time) or culled (over the size limit).",
		}, append(labels, "kind")),
		lastDuration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLastDuration,
			Help: "Duration of the last maintenance run of a DiskCache.",
		}, labels),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLastSuccess,
			Help: "Unix time the last maintenance run that succeeded on every shard finished.",
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	m.runs = register(reg, m.runs, &errs)
	m.failures = register(reg, m.failures, &errs)
	m.removed = register(reg, m.removed, &errs)
	m.lastDuration = register(reg, m.lastDuration, &errs)
	m.lastSuccess = register(reg, m.lastSuccess, &errs)
	return m, errors.Join(errs...)
}

// register registers c, or returns the equal collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	*errs = append(*errs, err)
	return c
}

// Observe records a run.
func (m *Metrics) Observe(namespace, name string, res *Result) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(namespace, name).Inc()
	m.removed.WithLabelValues(namespace, name, KindExpired).Add(float64(res.Expired))
	m.removed.WithLabelValues(namespace, name, KindCulled).Add(float64(res.Culled))
	m.lastDuration.WithLabelValues(namespace, name).Set(res.Duration().Seconds())
	if res.OK() {
		// Touch the failure series so it exists (at 0) for rate() and alerts.
		m.failures.WithLabelValues(namespace, name)
		m.lastSuccess.WithLabelValues(namespace, name).Set(float64(res.Finished.UnixNano()) / 1e9)
	} else {
		m.failures.WithLabelValues(namespace, name).Inc()
	}
}

// Forget drops the series of a deleted DiskCache.
func (m *Metrics) Forget(namespace, name string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": namespace, "name": name}
	m.runs.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.removed.DeletePartialMatch(l)
	m.lastDuration.DeletePartialMatch(l)
	m.lastSuccess.DeletePartialMatch(l)
}
