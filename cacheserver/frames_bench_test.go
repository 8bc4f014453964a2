package cacheserver_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// BenchmarkFrames serves the Django workload's requests (a key like
// ":1:key42" percent-encoded, pickled values with an expiry) over one
// connection upgraded to frames, one request at a time, against a server
// in this process with auth on. Its allocations per operation (the
// server's and this client's) are the number to watch; its time is a
// rough guide on a shared machine.
func BenchmarkFrames(b *testing.B) {
	dir := b.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("bench-token"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := cacheserver.LoadConfig([]string{"--data-dir", filepath.Join(dir, "data"), "--token-file", tokenFile},
		func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	srv, err := cacheserver.New(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	b.Cleanup(func() { cancel(); <-served })
	fc, resp := dialFrames(b, l.Addr().String(), "bench-token", upgradeHeaders)
	if fc == nil {
		b.Fatalf("upgrade: %v", resp.Status)
	}

	const keys = 100
	value := []byte("\x80\x05\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x19a value of a Django view.\x94.")
	pickle := [][2]string{{wire.HeaderValueType, "pickle"}}
	set := make([][]byte, keys)
	get := make([][]byte, keys)
	for i := range keys {
		target := fmt.Sprintf("/v1/keys/:1:key%d", i) // as the Python client sends Django's keys
		set[i] = frameReq{method: "PUT", target: target + "?expire=300", header: pickle, body: value}.encode()
		get[i] = frameReq{method: "GET", target: target}.encode()
	}
	roundTrip := func(frame []byte, want int) {
		if _, err := fc.c.Write(frame); err != nil {
			b.Fatal(err)
		}
		a, err := fc.read()
		if err != nil || a.status != want {
			b.Fatalf("%d %s %v", a.status, a.body, err)
		}
	}
	for i := range keys {
		roundTrip(set[i], http.StatusNoContent)
	}
	b.Run("get", func(b *testing.B) {
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			roundTrip(get[i%keys], http.StatusOK)
		}
	})
	b.Run("set", func(b *testing.B) {
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			roundTrip(set[i%keys], http.StatusNoContent)
		}
	})
}

// reportCPU reports allocations and this process's CPU time (user and
// system) per operation, which waits for the network do not inflate.
func reportCPU(b *testing.B) func() {
	b.ReportAllocs()
	start := cpuTime(b)
	return func() { b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
