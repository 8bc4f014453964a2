package maintenance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"

	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
)

// Defaults of the Runner.
const (
	DefaultParallelism  = 4
	DefaultShardTimeout = time.Minute
)

// Job is one maintenance run of one DiskCache.
type Job struct {
	// Shards is the number of shards, 0 … Shards-1.
	Shards int
	// Expire and Cull choose the operations, run in that order.
	Expire, Cull bool
	// Resolve returns the base URL (scheme://host:port) of a shard.
	Resolve func(shard int) string
	// Token is the bearer token (never logged or put in errors).
	Token string
	// HTTPClient overrides the Runner's (for a TLS configuration).
	HTTPClient *http.Client
}

// ShardResult is one shard's part of a run.
type ShardResult struct {
	Shard int
	// Expired and Culled are the items removed (as far as the shard got).
	Expired, Culled int64
	// Count and Volume are the shard's items and bytes after the run,
	// valid when HasUsage (a failed info call does not fail the run).
	Count, Volume int64
	HasUsage      bool
	// Finished is when the shard's calls ended.
	Finished time.Time
	// Err is why the shard failed, nil when it succeeded.
	Err error
}

// Result is a whole run.
type Result struct {
	Started, Finished time.Time
	// Expired and Culled are the totals over all shards.
	Expired, Culled int64
	// Shards has one entry per shard, in shard order.
	Shards []ShardResult
}

// Duration is how long the run took.
func (r *Result) Duration() time.Duration { return r.Finished.Sub(r.Started) }

// OK reports whether every shard succeeded.
func (r *Result) OK() bool { return len(r.Failed()) == 0 }

// Failed returns the shards that failed, in shard order.
func (r *Result) Failed() []ShardResult {
	var out []ShardResult
	for _, s := range r.Shards {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// Err joins the shard errors as "shard N: …", nil when every shard succeeded.
func (r *Result) Err() error {
	var errs []error
	for _, s := range r.Failed() {
		errs = append(errs, fmt.Errorf("shard %d: %w", s.Shard, s.Err))
	}
	return errors.Join(errs...)
}

// Runner runs expire and cull on the shards of a DiskCache, a bounded number
// of shards at a time, each within its own timeout, so a shard that is down
// or hangs costs one slot and one timeout, never the others' results. Its
// zero value is ready to use; it is safe for concurrent runs.
type Runner struct {
	// Parallelism is how many shards are worked on at once; 0 means
	// DefaultParallelism.
	Parallelism int
	// ShardTimeout bounds all calls to one shard; 0 means DefaultShardTimeout.
	ShardTimeout time.Duration
	// HTTPClient sends the calls when the Job has none; nil means a shared
	// client with keep-alive connections.
	HTTPClient *http.Client
	// Retries is the client's retry count for connection errors and 503s
	// (0: the client's default, negative: none).
	Retries int
	// Clock stamps the result; nil means the real clock.
	Clock clock.PassiveClock

	once       sync.Once
	defaultHTC *http.Client
}

// Run works on every shard and returns when all are done (or the context
// ends, which fails the shards not done yet).
func (r *Runner) Run(ctx context.Context, job Job) Result {
	clk := r.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	par := r.Parallelism
	if par <= 0 {
		par = DefaultParallelism
	}
	timeout := r.ShardTimeout
	if timeout <= 0 {
		timeout = DefaultShardTimeout
	}
	hc := job.HTTPClient
	if hc == nil {
		hc = r.httpClient()
	}

	res := Result{Started: clk.Now(), Shards: make([]ShardResult, max(job.Shards, 0))}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range res.Shards {
		res.Shards[i].Shard = i
		wg.Add(1)
		go func(sr *ShardResult) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				sr.Err, sr.Finished = ctx.Err(), clk.Now()
				return
			}
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			r.runShard(sctx, job, hc, sr)
			sr.Finished = clk.Now()
		}(&res.Shards[i])
	}
	wg.Wait()
	for _, s := range res.Shards {
		res.Expired += s.Expired
		res.Culled += s.Culled
	}
	res.Finished = clk.Now()
	return res
}

func (r *Runner) runShard(ctx context.Context, job Job, hc *http.Client, sr *ShardResult) {
	url := ""
	if job.Resolve != nil {
		url = job.Resolve(sr.Shard)
	}
	if url == "" {
		sr.Err = errors.New("no address for the shard")
		return
	}
	c, err := cacheclient.New(url, cacheclient.Options{Token: job.Token, HTTPClient: hc, Retries: r.Retries})
	if err != nil {
		sr.Err = err
		return
	}
	cache := c.Cache("")
	if job.Expire {
		if sr.Expired, err = cache.Expire(ctx); err != nil {
			sr.Err = fmt.Errorf("expire: %w", shardErr(ctx, err))
			return
		}
	}
	if job.Cull {
		if sr.Culled, err = cache.Cull(ctx); err != nil {
			sr.Err = fmt.Errorf("cull: %w", shardErr(ctx, err))
			return
		}
	}
	if info, err := cache.Info(ctx); err == nil {
		sr.Count, sr.Volume, sr.HasUsage = info.Count, info.Volume, true
	}
}

// shardErr says "timed out" rather than a bare context error.
func shardErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, cacheclient.ErrTimeout) {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

func (r *Runner) httpClient() *http.Client {
	if r.HTTPClient != nil {
		return r.HTTPClient
	}
	r.once.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 2
		r.defaultHTC = &http.Client{Transport: tr}
	})
	return r.defaultHTC
}
