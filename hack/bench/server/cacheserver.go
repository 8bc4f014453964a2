package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

// startCacheserver builds (unless -cacheserver names a binary) and starts a
// cacheserver on a free loopback port, without auth.
func startCacheserver(cfg config, work string) (*servers.Cacheserver, error) {
	bin := cfg.cacheBin
	if bin == "" {
		var err error
		if bin, err = servers.BuildCacheserver(work); err != nil {
			return nil, err
		}
	}
	args := append([]string{"--data-dir", filepath.Join(work, "cacheserver-data"), "--listen", "127.0.0.1:0",
		"--insecure-no-auth", "--log-format", "json"}, cfg.cacheArgs...)
	return servers.StartCacheserver(bin, args)
}

// runCacheserver runs one cell: conns connections (upgraded to frames
// with frames), each sending op requests for random keys, one at a time,
// for d.
func runCacheserver(cs *servers.Cacheserver, clock *servers.CPUClock, op string, size, conns, keys int, d time.Duration, frames bool) (result, error) {
	addr := cs.Addr
	value := loadgen.Value(size)
	dial := loadgen.Dial
	if frames {
		dial = loadgen.DialFrames
	}
	cpu0, cpuErr := clock.Used(cs.PID())
	st, err := loadgen.Run(conns, d, func(w int) (loadgen.Request, func(), error) {
		hc, err := dial(addr)
		if err != nil {
			return nil, nil, err
		}
		rng := rand.New(rand.NewPCG(uint64(w), uint64(size)))
		var mget []byte
		return func() error {
			var status, n, want int
			var err error
			switch op {
			case "set":
				status, n, err = hc.Do("PUT", loadgen.KeyPath(rng.IntN(keys)), value)
				want = 204
			case "mget":
				// One batch get of MGetKeys random keys.
				mget = append(mget[:0], `{"keys":[`...)
				for k := 0; k < servers.MGetKeys; k++ {
					if k > 0 {
						mget = append(mget, ',')
					}
					mget = append(mget, `{"key":"`...)
					mget = append(mget, loadgen.Key(rng.IntN(keys))...)
					mget = append(mget, `"}`...)
				}
				mget = append(mget, "]}"...)
				status, n, err = hc.Do("POST", "/v1/batch/get", mget)
				want = 200
				if err == nil && n < servers.MGetKeys*size {
					err = fmt.Errorf("batch get answered %d bytes", n)
				}
			default:
				status, n, err = hc.Do("GET", loadgen.KeyPath(rng.IntN(keys)), nil)
				want = 200
				if err == nil && n != size {
					err = fmt.Errorf("GET answered %d bytes", n)
				}
			}
			if err == nil && status != want {
				err = fmt.Errorf("answered %d", status)
			}
			return err
		}, hc.Close, nil
	})
	if err != nil {
		return result{}, err
	}
	cpu1, cpuErr2 := clock.Used(cs.PID())
	res := result{System: "cacheserver", Op: op, Size: size, Conns: conns, Ops: st.Requests - st.Errors, Errors: st.Errors,
		Secs: st.Elapsed.Seconds(), P50: st.P50, P99: st.P99}
	if cpuErr == nil && cpuErr2 == nil && st.Requests > 0 {
		res.ServerCPU = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(st.Requests)
	}
	if op == "mget" {
		res.Ops *= servers.MGetKeys // keys per second
	}
	res.RPS = float64(res.Ops) / res.Secs
	return res, nil
}

// runRedis runs one cell on Redis: a short calibration run, then a run
// sized to last about d.
func runRedis(r *servers.Redis, clock *servers.CPUClock, op string, size, conns, keys int, d time.Duration) (result, error) {
	n, err := r.Calibrate(op, size, conns, keys, d)
	if err != nil {
		return result{}, err
	}
	cpu0, cpuErr := clock.Used(r.PID())
	b, err := r.Benchmark(op, size, conns, keys, n)
	if err != nil {
		return result{}, err
	}
	cpu1, cpuErr2 := clock.Used(r.PID())
	res := result{System: "redis", Op: op, Size: size, Conns: conns, Ops: int64(n), Secs: b.Elapsed.Seconds(),
		RPS: b.RPS, P50: b.P50, P99: b.P99}
	if cpuErr == nil && cpuErr2 == nil && n > 0 {
		res.ServerCPU = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(n)
	}
	if op == "mget" {
		res.Ops *= servers.MGetKeys // keys per second
		res.RPS *= servers.MGetKeys
	}
	return res, nil
}
