// Command scrape measures what Prometheus scrapes cost the data requests of
// a cacheserver: GET latency with no scraper, then with -scrapers clients
// fetching /metrics in a loop, once with --metrics-interval 0 (every
// scrape renders the metrics, as before the interval existed) and once
// with the default interval (1 s). `make bench-scrape` runs it; see
// docs/benchmarks.md.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each cell")
	conns := flag.Int("conns", 4, "connections sending GETs")
	scrapers := flag.Int("scrapers", 32, "clients scraping /metrics in a loop")
	keys := flag.Int("keys", 1000, "keys preloaded and read")
	size := flag.Int("size", 100, "value size")
	bin := flag.String("cacheserver", "", "cacheserver binary (default: build cmd/cacheserver)")
	flag.Parse()
	if err := run(*duration, *conns, *scrapers, *keys, *size, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scrape:", err)
		os.Exit(1)
	}
}

func run(d time.Duration, conns, scrapers, keys, size int, bin string) error {
	work, err := os.MkdirTemp("", "bench-scrape-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		if bin, err = servers.BuildCacheserver(work); err != nil {
			return err
		}
	}
	fmt.Printf("machine: %s, load average %s; %d GET connections, %d B values, %s per cell\n\n",
		machine.CPUModel(), machine.LoadAverage(), conns, size, d)
	fmt.Println("| scrapers | --metrics-interval | GET/s | GET p50 ms | GET p99 ms | scrapes/s |")
	fmt.Println("|---|---|---|---|---|---|")
	for i, cell := range []struct {
		scrapers int
		interval string
	}{{0, "1s"}, {scrapers, "0s"}, {scrapers, "1s"}} {
		srv, err := servers.StartCacheserver(bin, []string{"--data-dir", filepath.Join(work, fmt.Sprint("data", i)),
			"--listen", "127.0.0.1:0", "--insecure-no-auth", "--log-format", "json", "--metrics-interval", cell.interval})
		if err != nil {
			return err
		}
		err = func() error {
			defer srv.Stop()
			if err := loadgen.Preload(keys, size, func(int) string { return srv.Addr }); err != nil {
				return err
			}
			var scrapes atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range cell.scrapers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := loadgen.Dial(srv.Addr)
					if err != nil {
						return
					}
					defer c.Close()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if status, _, err := c.Do("GET", "/metrics", nil); err == nil && status == 200 {
							scrapes.Add(1)
						}
					}
				}()
			}
			st, err := loadgen.Run(conns, d, func(w int) (loadgen.Request, func(), error) {
				c, err := loadgen.Dial(srv.Addr)
				if err != nil {
					return nil, nil, err
				}
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				return func() error {
					status, _, err := c.Do("GET", loadgen.KeyPath(rng.IntN(keys)), nil)
					if err == nil && status != 200 {
						err = fmt.Errorf("GET answered %d", status)
					}
					return err
				}, c.Close, nil
			})
			close(stop)
			wg.Wait()
			if err != nil {
				return err
			}
			if st.Errors > 0 {
				return fmt.Errorf("%d failed GETs: %v", st.Errors, st.FirstError)
			}
			fmt.Printf("| %d | %s | %.0f | %.2f | %.2f | %.0f |\n", cell.scrapers, cell.interval, st.PerSecond(), st.P50, st.P99,
				float64(scrapes.Load())/st.Elapsed.Seconds())
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}
