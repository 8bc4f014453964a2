package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// serveFloor runs the "net/http floor": a bare net/http server that answers
// the benchmark's GET /v1/keys/{key} with the value last PUT there (from a
// map; no engine, no auth, no metrics) with the same http.Server settings
// the cacheserver uses. It is what any server built on net/http pays per
// request, so the table can split the cacheserver's cost into net/http's
// and its own. bench-server starts it as `bench-server -serve-floor` and
// reads the address from its first stderr line, as with the cacheserver.
func serveFloor() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("floor: %v", err)
	}
	var mu sync.RWMutex
	values := map[string][]byte{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/keys/{key}", func(w http.ResponseWriter, r *http.Request) {
		mu.RLock()
		v, ok := values[r.PathValue("key")]
		mu.RUnlock()
		if !ok {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h := w.Header()
		h.Set("Diskcache-Value-Type", "bytes")
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(v)))
		_, _ = w.Write(v)
	})
	mux.HandleFunc("PUT /v1/keys/{key}", func(w http.ResponseWriter, r *http.Request) {
		v, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		values[r.PathValue("key")] = v
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	line, _ := json.Marshal(map[string]string{"msg": "serving", "addr": l.Addr().String()})
	fmt.Fprintln(os.Stderr, string(line))
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		fatal("floor: %v", err)
	}
}
