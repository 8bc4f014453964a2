package cacheserver

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/diskcache-operator/diskcache-operator/engine"
)

// metrics are the server's Prometheus metrics, on a registry of its own.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	lookups  *prometheus.CounterVec
	hits     prometheus.Counter
	misses   prometheus.Counter
	// forwards counts requests this shard passed to another, by target
	// shard and answer code ("error" when the shard could not be reached).
	forwards *prometheus.CounterVec
	// served counts requests this shard answered as their owner (or for its
	// part of a cluster-wide operation): the load a shard really carries.
	served prometheus.Counter
	// servedTotal is served's value, for GET /v1/usage.
	servedTotal atomic.Int64
	// discarded counts items removed because this shard held them without
	// owning them when it first got a topology.
	discarded prometheus.Counter

	connsOpen    prometheus.Gauge
	connsRefused prometheus.Counter
	// tlsHandshakeErrors counts failed TLS handshakes, which the log
	// reports once a minute at most (errorlog.go).
	tlsHandshakeErrors prometheus.Counter
	// waiting counts the requests waiting (?wait=) for a lock or semaphore.
	waiting  prometheus.Gauge
	diskFull prometheus.Gauge
	// rebalance* follow the moves of data between shards when the shard
	// count changes; staleDiscarded counts items a returning shard dropped.
	rebalanceItems    *prometheus.CounterVec
	rebalanceBytes    *prometheus.CounterVec
	rebalanceDuration prometheus.Gauge
	staleDiscarded    prometheus.Counter
}

func newMetrics(fc *engine.FanoutCache) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "diskcache_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "diskcache_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route", "method"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "diskcache_lookups_total",
			Help: "Key lookups (GET) by result: hit or miss.",
		}, []string{"result"}),
	}
	m.forwards = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "diskcache_forwarded_requests_total",
		Help: "Requests passed to the shard that owns them, by target shard and answer code (error: unreachable).",
	}, []string{"target_shard", "code"})
	m.served = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "diskcache_served_requests_total",
		Help: "Data requests this shard answered itself (as the owner, or its part of a cluster-wide operation).",
	})
	m.discarded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "diskcache_discarded_items_total",
		Help: "Items removed because this shard held them without owning them when it first got a topology (upgrade from unrouted shards).",
	})
	m.rebalanceItems = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "diskcache_rebalance_items_total",
		Help: "Items moved between shards after a change of the shard count, by direction (sent, received).",
	}, []string{"direction"})
	m.rebalanceBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "diskcache_rebalance_bytes_total",
		Help: "Value bytes moved between shards after a change of the shard count, by direction (sent, received).",
	}, []string{"direction"})
	m.rebalanceDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "diskcache_rebalance_duration_seconds",
		Help: "How long this shard's last handoff took, from the announcement to nothing left to send.",
	})
	m.staleDiscarded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "diskcache_stale_discarded_items_total",
		Help: "Items a shard dropped because it came back after missing a change of the shard count (its data was stale).",
	})
	m.hits, m.misses = m.lookups.WithLabelValues("hit"), m.lookups.WithLabelValues("miss")
	m.connsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "diskcache_http_connections_open",
		Help: "Client connections held open (at most --max-connections).",
	})
	m.connsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "diskcache_http_connections_refused_total",
		Help: "Connections refused because --max-connections were open: answered 503 (GET /healthz: 200) and closed.",
	})
	m.tlsHandshakeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "diskcache_tls_handshake_errors_total",
		Help: "TLS handshakes that failed (plain HTTP on the TLS port, a client not trusting the certificate, a connection closed before the handshake); the log reports them once a minute at most.",
	})
	m.waiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "diskcache_waiting_requests",
		Help: "Requests waiting (?wait=) for a lock or semaphore held by someone else.",
	})
	m.diskFull = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "diskcache_disk_full",
		Help: "1 while the data volume is full: new data is refused with 507 until space is freed.",
	})
	quarantined := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "diskcache_quarantined_databases",
		Help: "Fanout databases found damaged at start, moved aside to quarantine/ and started empty.",
	})
	quarantined.Set(float64(len(fc.Quarantined())))
	m.registry.MustRegister(m.requests, m.latency, m.lookups, m.forwards, m.served, m.discarded, m.connsOpen, m.connsRefused, m.tlsHandshakeErrors, m.waiting, m.diskFull, quarantined,
		m.rebalanceItems, m.rebalanceBytes, m.rebalanceDuration, m.staleDiscarded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&cacheCollector{fc: fc})
	return m
}

// routeMetrics are one route's series, resolved once at registration so a
// request pays no label lookups.
type routeMetrics struct {
	latency prometheus.Observer
	route   string
	method  string
	parent  *metrics
	codes   sync.Map // int → prometheus.Counter
}

func (m *metrics) forRoute(route, method string) *routeMetrics {
	return &routeMetrics{latency: m.latency.WithLabelValues(route, method), route: route, method: method, parent: m}
}

func (rm *routeMetrics) observe(code int, d time.Duration) {
	rm.latency.Observe(d.Seconds())
	c, ok := rm.codes.Load(code)
	if !ok {
		c, _ = rm.codes.LoadOrStore(code, rm.parent.requests.WithLabelValues(rm.route, rm.method, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

func (m *metrics) forwarded(shard, code int) {
	c := "error"
	if code != 0 {
		c = strconv.Itoa(code)
	}
	m.forwards.WithLabelValues(strconv.Itoa(shard), c).Inc()
}

// serve counts a request this shard answers itself.
func (m *metrics) serve() {
	m.served.Inc()
	m.servedTotal.Add(1)
}

func (m *metrics) lookup(hit bool) {
	if hit {
		m.hits.Inc()
	} else {
		m.misses.Inc()
	}
}

// cacheCollector reads the cache's state at scrape time.
type cacheCollector struct{ fc *engine.FanoutCache }

var (
	descItems     = prometheus.NewDesc("diskcache_items", "Items in a SQLite database of the fanout (expired ones included).", []string{"database"}, nil)
	descVolume    = prometheus.NewDesc("diskcache_volume_bytes", "Estimated bytes on disk of a SQLite database of the fanout: database pages plus value files.", []string{"database"}, nil)
	descFileBytes = prometheus.NewDesc("diskcache_value_file_bytes", "Bytes of value files of a SQLite database of the fanout.", []string{"database"}, nil)
	descExpired   = prometheus.NewDesc("diskcache_expired_total", "Items removed because they expired, named caches included, since start.", nil, nil)
	descEvicted   = prometheus.NewDesc("diskcache_evicted_total", "Items removed by the eviction policy (culled), named caches included, since start.", nil, nil)
	descCorrupt   = prometheus.NewDesc("diskcache_corrupt_values_total", "Reads of the server's cache that found a value file of another size than recorded and answered a miss, since start.", nil, nil)
	descHotGets   = prometheus.NewDesc("diskcache_hot_value_gets_total", "Gets of a SQLite database of the fanout that looked in memory (--hot-value-bytes) first, by whether memory answered them, since start.", []string{"database", "result"}, nil)
	descHotBytes  = prometheus.NewDesc("diskcache_hot_value_bytes", "Bytes of values of a SQLite database of the fanout kept in memory (--hot-value-bytes).", []string{"database"}, nil)
	descHits      = prometheus.NewDesc("diskcache_stats_hits", "Hits counted by the engine's statistics setting (persistent).", nil, nil)
	descMisses    = prometheus.NewDesc("diskcache_stats_misses", "Misses counted by the engine's statistics setting (persistent).", nil, nil)
)

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descItems, descVolume, descFileBytes, descExpired, descEvicted, descCorrupt, descHotGets, descHotBytes, descHits, descMisses} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var hits, misses int64
	for i := 0; i < c.fc.DatabaseCount(); i++ {
		db := c.fc.Database(i)
		label := strconv.Itoa(i)
		if n, err := db.Len(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descItems, prometheus.GaugeValue, float64(n), label)
		}
		if v, err := db.Volume(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descVolume, prometheus.GaugeValue, float64(v), label)
		}
		if b, err := db.ValueFileBytes(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descFileBytes, prometheus.GaugeValue, float64(b), label)
		}
		hot := db.HotStats()
		ch <- prometheus.MustNewConstMetric(descHotGets, prometheus.CounterValue, float64(hot.Hits), label, "hit")
		ch <- prometheus.MustNewConstMetric(descHotGets, prometheus.CounterValue, float64(hot.Misses), label, "miss")
		ch <- prometheus.MustNewConstMetric(descHotBytes, prometheus.GaugeValue, float64(hot.Bytes), label)
		if h, m, err := db.StatCounts(ctx); err == nil {
			hits, misses = hits+h, misses+m
		}
	}
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.GaugeValue, float64(hits))
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.GaugeValue, float64(misses))
	counts := c.fc.Counters()
	ch <- prometheus.MustNewConstMetric(descExpired, prometheus.CounterValue, float64(counts.Expired))
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(counts.Evicted))
	ch <- prometheus.MustNewConstMetric(descCorrupt, prometheus.CounterValue, float64(counts.Corrupt))
}

// serverCollector reads, at scrape time, how full the shard is (what its
// files take against its size limit and against the volume, so that fill
// can be charted and alerted on before writes are refused) and the
// topology it routes by (so that shards disagreeing can be alerted on).
type serverCollector struct{ s *Server }

var (
	descDiskUsed  = prometheus.NewDesc("diskcache_disk_used_bytes", "Bytes allocated to the files of the data directory: databases, their logs, value files, named caches, deques and indexes (the full-disk reserve not counted).", nil, nil)
	descSizeLimit = prometheus.NewDesc("diskcache_size_limit_bytes", "The cache's size_limit: culling keeps the volume of its databases under it.", nil, nil)
	descFSSize    = prometheus.NewDesc("diskcache_filesystem_size_bytes", "Size of the filesystem holding the data directory.", nil, nil)
	descFSAvail   = prometheus.NewDesc("diskcache_filesystem_avail_bytes", "Bytes of the filesystem holding the data directory that the server may still use.", nil, nil)
	descEpoch     = prometheus.NewDesc("diskcache_topology_epoch", "Epoch of the topology this shard routes by (absent on a server that is not a shard).", nil, nil)
	descShards    = prometheus.NewDesc("diskcache_topology_shards", "Shards in the topology this shard routes by.", nil, nil)
	descMoving    = prometheus.NewDesc("diskcache_topology_moving", "1 while the topology in force names a previous layout: keys are moving between shards.", nil, nil)
	descOpenColls = prometheus.NewDesc("diskcache_open_collections", "Named caches, deques and indexes holding database connections (bounded by --max-open-collections, closed after --collection-idle-timeout unused).", nil, nil)
)

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDiskUsed, descSizeLimit, descFSSize, descFSAvail, descEpoch, descShards, descMoving, descOpenColls} {
		ch <- d
	}
}

func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	if a := c.s.cluster.current(); c.s.cluster.sharded() && a != nil {
		moving := 0.0
		if a.Previous != nil {
			moving = 1
		}
		ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(a.Epoch))
		ch <- prometheus.MustNewConstMetric(descShards, prometheus.GaugeValue, float64(len(a.Shards)))
		ch <- prometheus.MustNewConstMetric(descMoving, prometheus.GaugeValue, moving)
	}
	if used, err := c.s.diskBytes(); err == nil {
		ch <- prometheus.MustNewConstMetric(descDiskUsed, prometheus.GaugeValue, float64(used))
	}
	ch <- prometheus.MustNewConstMetric(descSizeLimit, prometheus.GaugeValue, float64(storeSettings(c.s.cache).SizeLimit))
	ch <- prometheus.MustNewConstMetric(descOpenColls, prometheus.GaugeValue, float64(c.s.cache.OpenCollections()))
	var st syscall.Statfs_t
	if syscall.Statfs(c.s.cfg.DataDir, &st) == nil {
		ch <- prometheus.MustNewConstMetric(descFSSize, prometheus.GaugeValue, float64(st.Blocks)*float64(st.Bsize))
		ch <- prometheus.MustNewConstMetric(descFSAvail, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize))
	}
}
