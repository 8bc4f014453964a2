package controllers

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// Metric names of the rebalancing the operator orchestrates.
const (
	MetricRebalancesStarted  = "diskcache_operator_rebalances_started_total"
	MetricRebalancesFinished = "diskcache_operator_rebalances_finished_total"
	MetricRebalanceDuration  = "diskcache_operator_rebalance_duration_seconds"
	MetricRebalancing        = "diskcache_operator_rebalancing"
)

// RebalanceMetrics count the moves of keys the operator starts and ends,
// labelled by the DiskCache's namespace and name. Register them on
// controller-runtime's registry so the manager's /metrics serves them. A
// nil *RebalanceMetrics records nothing.
type RebalanceMetrics struct {
	startedTotal  *prometheus.CounterVec
	finishedTotal *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	rebalancing   *prometheus.GaugeVec
}

// NewRebalanceMetrics creates the metrics and registers them on reg (nil:
// not registered). Collectors registered there before (a second manager in
// one process, as in tests) are shared.
func NewRebalanceMetrics(reg prometheus.Registerer) (*RebalanceMetrics, error) {
	labels := []string{"namespace", "name"}
	m := &RebalanceMetrics{
		startedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRebalancesStarted,
			Help: "Moves of keys between shards the operator started (a change of spec.shards announced with the previous layout).",
		}, labels),
		finishedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRebalancesFinished,
			Help: "Moves of keys between shards the operator ended once every shard had handed off.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricRebalanceDuration,
			Help:    "Time from the announcement of a move to its end.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s to about 9 h
		}, labels),
		rebalancing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricRebalancing,
			Help: "1 while a move of keys between shards is in force, else 0.",
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	m.startedTotal = registerShared(reg, m.startedTotal, &errs)
	m.finishedTotal = registerShared(reg, m.finishedTotal, &errs)
	m.duration = registerShared(reg, m.duration, &errs)
	m.rebalancing = registerShared(reg, m.rebalancing, &errs)
	return m, errors.Join(errs...)
}

// registerShared registers c, or returns the equal collector registered
// before.
func registerShared[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if prev, ok := are.ExistingCollector.(C); ok {
			return prev
		}
	}
	*errs = append(*errs, err)
	return c
}

func (m *RebalanceMetrics) started(dc *cachev1alpha1.DiskCache) {
	if m != nil {
		m.startedTotal.WithLabelValues(dc.Namespace, dc.Name).Inc()
	}
}

// finished counts an ended move; its duration only when its start is known.
func (m *RebalanceMetrics) finished(dc *cachev1alpha1.DiskCache, d time.Duration, known bool) {
	if m == nil {
		return
	}
	m.finishedTotal.WithLabelValues(dc.Namespace, dc.Name).Inc()
	if known {
		m.duration.WithLabelValues(dc.Namespace, dc.Name).Observe(d.Seconds())
	}
}

func (m *RebalanceMetrics) setRebalancing(dc *cachev1alpha1.DiskCache, on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.rebalancing.WithLabelValues(dc.Namespace, dc.Name).Set(v)
}

// forget drops the series of a deleted DiskCache.
func (m *RebalanceMetrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": namespace, "name": name}
	m.startedTotal.Delete(l)
	m.finishedTotal.Delete(l)
	m.duration.Delete(l)
	m.rebalancing.Delete(l)
}
