package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

func TestIdempotentCallsRetryOn503(t *testing.T) {
	var calls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"timeout","message":"busy"}`))
			return
		}
		w.Header().Set("Diskcache-Value-Type", "int")
		_, _ = w.Write([]byte("5"))
	}))
	defer ts.Close()
	c, err := New(ts.URL, Options{Retries: 2, Backoff: 1, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	it, ok, err := c.Cache("").Get(context.Background(), kv.TextKey("k"))
	if err != nil || !ok || !it.Value.Equal(kv.Int(5)) || calls.Load() != 3 {
		t.Fatalf("Get = %+v %v %v after %d calls; want 5 after 3", it, ok, err, calls.Load())
	}
}

func TestNonIdempotentCallsDoNotRetry(t *testing.T) {
	var calls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"timeout","message":"busy"}`))
	}))
	defer ts.Close()
	c, _ := New(ts.URL, Options{Retries: 5, Backoff: 1, DirectOnly: true})
	_, err := c.Cache("").Incr(context.Background(), kv.TextKey("n"), kv.Int(1), kv.Int(0))
	if !errors.Is(err, ErrTimeout) || calls.Load() != 1 {
		t.Fatalf("Incr = %v after %d calls; want one call and ErrTimeout", err, calls.Load())
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || e.Message != "busy" {
		t.Fatalf("error = %#v", err)
	}
}

func TestConnectionErrorsRetryThenFail(t *testing.T) {
	// A listener that accepts and immediately closes: every attempt is a
	// connection-level failure.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	c, _ := New("http://"+l.Addr().String(), Options{Retries: 2, Backoff: 1, DirectOnly: true})
	if _, _, err := c.Cache("").Get(context.Background(), kv.TextKey("k")); err == nil {
		t.Fatal("Get against a closing listener succeeded")
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connection attempts, want 1 + 2 retries", n)
	}
}

// A server at its --max-connections answers 503 too_many_connections on
// accept, before it reads the request: even a call that is not idempotent
// goes again.
func TestRefusedConnectionRetriesAnyCall(t *testing.T) {
	var calls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"too_many_connections","message":"the server holds as many connections as --max-connections allows; retry"}`))
			return
		}
		w.Header().Set("Diskcache-Value-Type", "int")
		_, _ = w.Write([]byte("1"))
	}))
	defer ts.Close()
	c, _ := New(ts.URL, Options{Retries: 2, Backoff: 1, DirectOnly: true})
	v, err := c.Cache("").Incr(context.Background(), kv.TextKey("n"), kv.Int(1), kv.Int(0))
	if err != nil || !v.Equal(kv.Int(1)) || calls.Load() != 2 {
		t.Fatalf("Incr = %v, %v after %d calls; want 1 after 2", v, err, calls.Load())
	}
}
