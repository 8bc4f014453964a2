package engine_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// djangoItems returns the keys, the value and the expiry of the Django
// workload: 1,100 keys, a small pickled value, Django's default timeout.
func djangoItems() ([]kv.Key, kv.Value, kv.SetOptions) {
	keys := make([]kv.Key, 1100)
	for i := range keys {
		keys[i] = kv.TextKey(fmt.Sprintf(":1:key%d", i))
	}
	v := kv.Value{Type: kv.ValuePickle, Data: []byte("\x80\x05\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x19a value of a Django view.\x94.")}
	return keys, v, kv.SetOptions{Expire: kv.ExpireAfter(300 * time.Second)}
}

// reportCPU starts counting the process's CPU time; the function it returns
// reports it per operation as cpu-µs/op (background goroutines included,
// which ns/op leaves out).
func reportCPU(b *testing.B) func() {
	var r0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	return func() {
		var r1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

// BenchmarkFanoutSet stores the Django workload's small pickled values
// under 1,100 keys of a fanout cache, one write at a time, with the
// library's defaults and with the options the cacheserver sets. Its
// cpu-µs/op is the process's CPU per set, the background checkpoints
// included (they run on another core, so ns/op leaves them out): the
// number to watch when changing the write path or the checkpoints.
func BenchmarkFanoutSet(b *testing.B) {
	for _, c := range []struct {
		name string
		o    engine.FanoutOptions
	}{
		{"default", engine.FanoutOptions{}},
		// The server's options, its --database-timeout included: with the
		// library's 10 ms, a set that waits out a checkpoint's fsync on a
		// slow disk fails the benchmark with "database timeout".
		{"server", engine.FanoutOptions{Timeout: time.Second, BackgroundCheckpoints: true, BatchYield: true, HotBytes: 32 << 20, Quarantine: true, Exclusive: true, PageSize: 2048}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			f, err := engine.OpenFanout(ctx, b.TempDir(), c.o)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			keys, v, opts := djangoItems()
			defer reportCPU(b)()
			for i := 0; b.Loop(); i++ {
				if err := f.Set(ctx, keys[(i*7919)%len(keys)], v, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFanoutMixed runs the Django workload's mix on a fanout cache with
// the cacheserver's options, from 8 goroutines at once as from a server's
// connections: of every 100 operations 90 gets (one key in ten never set,
// so a tenth of the gets miss and read SQLite) and 10 sets. cpu-µs/op is
// the process's CPU per operation.
func BenchmarkFanoutMixed(b *testing.B) {
	ctx := context.Background()
	f, err := engine.OpenFanout(ctx, b.TempDir(), engine.FanoutOptions{Timeout: time.Second, BackgroundCheckpoints: true, BatchYield: true, HotBytes: 32 << 20, Quarantine: true, Exclusive: true, PageSize: 2048})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	keys, v, opts := djangoItems()
	for i, k := range keys {
		if i%10 != 0 {
			if err := f.Set(ctx, k, v, opts); err != nil {
				b.Fatal(err)
			}
		}
	}
	defer reportCPU(b)()
	var seed atomic.Int64
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1)) * 7919
		for pb.Next() {
			i += 7919
			k := keys[i%len(keys)]
			if i%100 < 10 && i%len(keys)%10 != 0 {
				if err := f.Set(ctx, k, v, opts); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			if _, _, err := f.Get(ctx, k, engine.GetOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
