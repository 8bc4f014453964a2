// Command listing measures listing a cache's keys a page at a time: the
// cacheserver's GET /v1/keys (what django-redis's keys, iter_keys and
// delete_pattern run on, through the Django backend) next to Redis's SCAN
// (what they run on with django-redis), on the same keys, in the same run.
//
// Both hold -keys keys "user:N" and as many "other:N" (100-byte values);
// each listing reads every page, -count keys looked at a page (the server's
// limit, SCAN's COUNT), once for every key and once with the pattern
// "user:*". Redis is listed with go-redis's SCAN, the cacheserver with the
// Go client; the figures are the wall time of a whole listing, the keys it
// returned per second, and the server's CPU per key looked at, each the
// median of -rounds rounds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/redis/go-redis/v9"
)

type result struct {
	System    string  `json:"system"`
	Pattern   string  `json:"pattern"`
	Listed    int     `json:"listed"`
	Seconds   float64 `json:"seconds"`
	KeysPerS  float64 `json:"keys_per_second"`
	CPUPerKey float64 `json:"server_cpu_us_per_key_looked_at"`
}

func main() {
	keys := flag.Int("keys", 100000, "keys \"user:N\", and as many \"other:N\"")
	count := flag.Int("count", 1000, "keys looked at per page (the server's limit, SCAN's COUNT)")
	rounds := flag.Int("rounds", 3, "listings of each kind per system; the median is reported")
	fanout := flag.Int("fanout", 8, "the cacheserver's --fanout")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()
	if err := run(*keys, *count, *rounds, *fanout, *jsonOut); err != nil {
		fmt.Fprintf(os.Stderr, "bench-listing: %v\n", err)
		os.Exit(1)
	}
}

func run(keys, count, rounds, fanout int, jsonOut string) error {
	work, err := os.MkdirTemp("", "bench-listing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var stops servers.Stops
	defer stops.Run()
	clock, err := servers.NewCPUClock()
	if err != nil {
		return err
	}
	bin, err := servers.BuildCacheserver(work)
	if err != nil {
		return err
	}
	cs, err := servers.StartCacheserver(bin, []string{"--data-dir", filepath.Join(work, "cacheserver-data"),
		"--listen", "127.0.0.1:0", "--insecure-no-auth", "--log-format", "json", "--fanout", strconv.Itoa(fanout)})
	if err != nil {
		return err
	}
	stops.Add(cs.Stop)
	rs, err := servers.StartRedis(filepath.Join(work, "redis-data"), true)
	if err != nil {
		return err
	}
	stops.Add(rs.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rs.Port())})
	defer rdb.Close()
	c, err := client.New("http://"+cs.Addr, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := fill(c, rdb, keys); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "filled both with %d keys\n", 2*keys)

	var results []result
	for _, pattern := range []string{"*", "user:*"} {
		for _, system := range []string{"cacheserver", "redis"} {
			var rounds3 []result
			for range rounds {
				var r result
				var err error
				if system == "redis" {
					r, err = listRedis(rdb, rs, clock, pattern, count)
				} else {
					r, err = listCacheserver(c, cs, clock, pattern, count)
				}
				if err != nil {
					return err
				}
				r.CPUPerKey /= float64(2 * keys) // both look at every key
				fmt.Fprintf(os.Stderr, "  %-11s %-7s %7d keys in %6.3f s: %9.0f keys/s, server %5.2f µs CPU per key looked at\n",
					system, pattern, r.Listed, r.Seconds, r.KeysPerS, r.CPUPerKey)
				rounds3 = append(rounds3, r)
			}
			results = append(results, median(rounds3))
		}
	}
	m := fmt.Sprintf("%s, %d CPUs, %s, load average %s", machine.CPUModel(), runtime.NumCPU(),
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine.LoadAverage())
	fmt.Printf("\nListing %d keys (%d \"user:N\", %d \"other:N\"), %d keys looked at a page, median of %d rounds; %s; cacheserver --fanout %d, %s (%s)\n\n",
		2*keys, keys, keys, count, rounds, m, fanout, rs.Version, servers.Durability)
	fmt.Println("| pattern | system | keys listed | seconds | keys/s | server CPU µs per key looked at |")
	fmt.Println("|---|---|--:|--:|--:|--:|")
	for _, r := range results {
		fmt.Printf("| `%s` | %s | %d | %.3f | %.0f | %.2f |\n", r.Pattern, r.System, r.Listed, r.Seconds, r.KeysPerS, r.CPUPerKey)
	}
	if jsonOut != "" {
		b, err := json.MarshalIndent(map[string]any{"machine": m, "keys": 2 * keys, "count": count, "rounds": rounds, "results": results}, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(jsonOut, b, 0o644)
	}
	return nil
}

// fill stores the keys in both: batch sets of 1,000 keys each.
func fill(c *client.Client, rdb *redis.Client, keys int) error {
	ctx := context.Background()
	value := kv.Bytes([]byte(strings.Repeat("v", 100)))
	for _, prefix := range []string{"user:", "other:"} {
		for lo := 0; lo < keys; lo += 1000 {
			items := make([]client.SetItem, 0, 1000)
			pipe := rdb.Pipeline()
			for i := lo; i < min(lo+1000, keys); i++ {
				k := prefix + strconv.Itoa(i)
				items = append(items, client.SetItem{Key: kv.TextKey(k), Value: value})
				pipe.Set(ctx, k, value.Data, 0)
			}
			res, err := c.Cache("").SetMany(ctx, items)
			if err != nil {
				return err
			}
			if res.Stored != len(items) {
				return fmt.Errorf("cacheserver stored %d of %d", res.Stored, len(items))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
		}
	}
	return nil
}

func listCacheserver(c *client.Client, cs *servers.Cacheserver, clock *servers.CPUClock, pattern string, count int) (result, error) {
	opts := client.KeysOptions{Limit: count}
	if pattern != "*" {
		opts.Match = pattern
	}
	cpu0, err := clock.Used(cs.PID())
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	n := 0
	for _, err := range c.Cache("").Keys(context.Background(), opts) {
		if err != nil {
			return result{}, err
		}
		n++
	}
	return measured("cacheserver", pattern, n, time.Since(start), clock, cs.PID(), cpu0)
}

func listRedis(rdb *redis.Client, rs *servers.Redis, clock *servers.CPUClock, pattern string, count int) (result, error) {
	ctx := context.Background()
	cpu0, err := clock.Used(rs.PID())
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	n := 0
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, int64(count)).Result()
		if err != nil {
			return result{}, fmt.Errorf("redis SCAN: %w", err)
		}
		n += len(keys)
		if cursor = next; cursor == 0 {
			break
		}
	}
	return measured("redis", pattern, n, time.Since(start), clock, rs.PID(), cpu0)
}

func measured(system, pattern string, n int, took time.Duration, clock *servers.CPUClock, pid int, cpu0 time.Duration) (result, error) {
	cpu1, err := clock.Used(pid)
	if err != nil {
		return result{}, err
	}
	return result{System: system, Pattern: pattern, Listed: n, Seconds: took.Seconds(),
		KeysPerS: float64(n) / took.Seconds(), CPUPerKey: float64((cpu1 - cpu0).Microseconds())}, nil
}

func median(rs []result) result {
	slices.SortFunc(rs, func(a, b result) int { return int((a.Seconds - b.Seconds) * 1e9) })
	return rs[len(rs)/2]
}
