package cacheserver

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gatherFunc is a prometheus.Gatherer.
type gatherFunc func() ([]*dto.MetricFamily, error)

func (f gatherFunc) Gather() ([]*dto.MetricFamily, error) { return f() }

// TestScrapeLimiterSharesFreshRenderings: scrapes that arrive while a
// rendering runs do not get it (it may predate them); they wait together
// for one new rendering, which sees what happened before they arrived.
func TestScrapeLimiterSharesFreshRenderings(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe_value", Help: "h"})
	reg.MustRegister(g)
	g.Set(1)

	var gathers atomic.Int32
	firstStarted, releaseFirst := make(chan struct{}), make(chan struct{})
	l := newScrapeLimiter(gatherFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := reg.Gather()
		if gathers.Add(1) == 1 {
			close(firstStarted)
			<-releaseFirst
		}
		return mfs, err
	}), time.Hour)
	releaseSleep := make(chan struct{})
	var slept atomic.Int32
	l.sleep = func(d time.Duration) {
		slept.Add(1)
		<-releaseSleep
	}
	const scrapers = 32
	var joined sync.WaitGroup
	l.joined = joined.Done

	ctx := context.Background()
	joined.Add(1)
	first := make(chan string)
	go func() {
		b, err := l.render(ctx)
		if err != nil {
			t.Error(err)
		}
		first <- string(b)
	}()
	<-firstStarted
	g.Set(2)
	joined.Add(scrapers)
	bodies := make(chan string, scrapers)
	for range scrapers {
		go func() {
			b, err := l.render(ctx)
			if err != nil {
				t.Error(err)
			}
			bodies <- string(b)
		}()
	}
	joined.Wait() // all 32 wait for a rendering
	close(releaseFirst)
	if b := <-first; !strings.Contains(b, "probe_value 1\n") {
		t.Fatalf("first scrape got\n%s", b)
	}
	close(releaseSleep)
	for range scrapers {
		if b := <-bodies; !strings.Contains(b, "probe_value 2\n") {
			t.Fatalf("a scrape that arrived after the gauge was set got\n%s", b)
		}
	}
	if n := gathers.Load(); n != 2 {
		t.Fatalf("%d renderings for 1 + %d scrapes, want 2", n, scrapers)
	}
	if n := slept.Load(); n != 1 {
		t.Fatalf("the second rendering waited %d times for the interval, want 1", n)
	}
}
