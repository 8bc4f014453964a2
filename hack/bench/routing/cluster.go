package main

import (
	"bufio"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// cluster is n cacheserver processes on loopback serving one topology, each
// started as `cacheserver --shard-index I --peers URL0,URL1,...`.
type cluster struct {
	shards []*servers.Cacheserver
	addrs  []string
	owners []int // owners[i] is the shard that owns loadgen.Key(i)
}

func startCluster(bin, dir string, n int, cfg config) (*cluster, error) {
	c := &cluster{}
	var urls []string
	for range n {
		port, err := servers.FreePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c.addrs = append(c.addrs, addr)
		urls = append(urls, "http://"+addr)
	}
	for i, addr := range c.addrs {
		args := append([]string{"--data-dir", filepath.Join(dir, strconv.Itoa(i)), "--listen", addr,
			"--insecure-no-auth", "--log-format", "json",
			"--shard-index", strconv.Itoa(i), "--peers", strings.Join(urls, ",")}, cfg.cacheArgs...)
		s, err := servers.StartCacheserver(bin, args)
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("shard %d of %d: %w", i, n, err)
		}
		c.shards = append(c.shards, s)
	}
	if err := c.ready(); err != nil {
		c.stop()
		return nil, err
	}
	for i := range cfg.keys {
		c.owners = append(c.owners, topology.Owner([]byte(loadgen.Key(i)), n))
	}
	return c, nil
}

func (c *cluster) stop() {
	for _, s := range c.shards {
		s.Stop()
	}
}

func (c *cluster) pids() []int {
	var pids []int
	for _, s := range c.shards {
		pids = append(pids, s.PID())
	}
	return pids
}

// ready checks that every shard is running and answers /readyz with 200,
// which a shard of a topology does only once it has the topology.
func (c *cluster) ready() error {
	for i, s := range c.shards {
		if s.Exited() {
			return fmt.Errorf("shard %d (%s) has exited", i, c.addrs[i])
		}
		resp, err := http.Get("http://" + c.addrs[i] + "/readyz")
		if err != nil {
			return fmt.Errorf("shard %d (%s) does not answer: %w", i, c.addrs[i], err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("shard %d (%s): /readyz answered %s", i, c.addrs[i], resp.Status)
		}
	}
	return nil
}

// preload sets every key of the keyspace through its owner, so GETs hit.
func (c *cluster) preload(keys, size int) error {
	return loadgen.Preload(keys, size, func(i int) string { return c.addrs[c.owners[i]] })
}

// forwarded is the number of requests the shards have forwarded so far:
// the sum of diskcache_forwarded_requests_total over all shards.
func (c *cluster) forwarded() (int64, error) {
	var sum int64
	for i, addr := range c.addrs {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
		if err != nil {
			return 0, fmt.Errorf("shard %d metrics: %w", i, err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "diskcache_forwarded_requests_total{") {
				continue
			}
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				resp.Body.Close()
				return 0, fmt.Errorf("shard %d metrics: %q: %w", i, line, err)
			}
			sum += int64(v)
		}
		err = sc.Err()
		resp.Body.Close()
		if err != nil {
			return 0, fmt.Errorf("shard %d metrics: %w", i, err)
		}
	}
	return sum, nil
}
