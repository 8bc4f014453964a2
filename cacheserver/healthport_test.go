package cacheserver_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// probeClient asks as the kubelet does: a new connection per request.
func probeClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Timeout: hangGuard,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsConfig}}
}

// healthGet returns the status of GET url (0 and the error when there is
// no answer).
func healthGet(c *http.Client, url, token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestHealthPortAnswersAtTheConnectionLimit holds every connection of
// --max-connections idle, keeps 200 more connections that send nothing
// and a storm of requests coming at the data port, and asks the health
// port (--health-listen) as the kubelet and Prometheus would: every
// probe and scrape is answered 200. (On the data port the refusals of
// the storm crowd them out.)
func TestHealthPortAnswersAtTheConnectionLimit(t *testing.T) {
	const (
		limit    = 20
		silent   = 200
		stormers = 100
		probes   = 40
		scrapes  = 5
	)
	srv, _ := startServer(t, "--max-connections", fmt.Sprint(limit), "--health-listen", "127.0.0.1:0")
	if srv.HealthURL == "" {
		t.Fatal("no health port")
	}
	// Idle kept-alive connections, each after an answered request: they
	// hold the limit until the idle timeout (2 minutes).
	for range limit {
		c := dialRaw(t, srv)
		defer c.Close()
		if status, _ := c.get(t, "/healthz"); status != http.StatusOK {
			t.Fatalf("held connection: GET /healthz %d", status)
		}
	}
	over := dialRaw(t, srv)
	if status, _ := over.get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("GET /readyz over the limit on the data port: %d, want 503", status)
	}
	over.Close()

	stop := make(chan struct{})
	var wg, started sync.WaitGroup
	var refusals, stormAnswers atomic.Int64
	defer func() { close(stop); wg.Wait() }()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	// redial runs n goroutines that each open a connection to the data
	// port, hand it to use and open another until the test stops.
	redial := func(n int, use func(c net.Conn)) {
		for range n {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				first := true
				for !stopped() {
					c, err := net.Dial("tcp", srv.Addr)
					if first {
						started.Done()
						first = false
					}
					if err != nil {
						continue
					}
					_ = c.SetDeadline(time.Now().Add(hangGuard))
					use(c)
					c.Close()
				}
			}()
		}
	}
	// Connections that send nothing, each opened again when the server
	// closes it.
	redial(silent, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	// Well-behaved clients sending a request on a new connection, again
	// as soon as they have their answer.
	redial(stormers, func(c net.Conn) {
		_, _ = fmt.Fprintf(c, "GET /v1/keys/storm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", srv.Token)
		b, _ := io.ReadAll(c)
		if len(b) > 0 {
			stormAnswers.Add(1)
		}
		if strings.Contains(string(b), wire.CodeTooManyConnections) {
			refusals.Add(1)
		}
	})
	started.Wait()

	probe := probeClient(nil)
	ok := map[string]int{}
	var failures []string
	for range probes {
		for _, path := range []string{"/healthz", "/readyz"} {
			status, err := healthGet(probe, srv.HealthURL+path, "")
			if status == http.StatusOK {
				ok[path]++
			} else {
				failures = append(failures, fmt.Sprintf("%s: %d %v", path, status, err))
			}
		}
	}
	// Prometheus keeps its connection.
	scraper := &http.Client{Timeout: hangGuard}
	for range scrapes {
		status, err := healthGet(scraper, srv.HealthURL+"/metrics", "")
		if status == http.StatusOK {
			ok["/metrics"]++
		} else {
			failures = append(failures, fmt.Sprintf("/metrics: %d %v", status, err))
		}
	}
	if ok["/healthz"] != probes || ok["/readyz"] != probes || ok["/metrics"] != scrapes {
		t.Errorf("health port under a connection storm: %d/%d /healthz, %d/%d /readyz, %d/%d /metrics answered 200; failures: %v",
			ok["/healthz"], probes, ok["/readyz"], probes, ok["/metrics"], scrapes, failures)
	}
	if refusals.Load() == 0 {
		t.Errorf("the storm was never refused (%d answers): the data port was not at its limit", stormAnswers.Load())
	}
	t.Logf("storm: %d answers, %d of them too_many_connections", stormAnswers.Load(), refusals.Load())
}

// TestHealthPortServesOnlyHealth: the health port answers /healthz,
// /readyz and /metrics with the main port's auth rules, and 404 to the
// data API whatever the token.
func TestHealthPortServesOnlyHealth(t *testing.T) {
	for _, requireToken := range []bool{false, true} {
		t.Run(fmt.Sprintf("metrics-require-token=%v", requireToken), func(t *testing.T) {
			args := []string{"--health-listen", "127.0.0.1:0"}
			if requireToken {
				args = append(args, "--metrics-require-token")
			}
			srv, _ := startServer(t, args...)
			c := probeClient(nil)
			want := map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200,
				"/v1/keys/k": 404, "/v1/config": 404, "/debug/pprof/": 404, "/": 404}
			if requireToken {
				want["/metrics"] = 401
			}
			for path, code := range want {
				if got, err := healthGet(c, srv.HealthURL+path, ""); got != code {
					t.Errorf("GET %s without a token: %d %v, want %d", path, got, err, code)
				}
			}
			for _, path := range []string{"/metrics", "/v1/keys/k", "/v1/config"} {
				code := 200
				if path != "/metrics" {
					code = 404
				}
				if got, err := healthGet(c, srv.HealthURL+path, srv.Token); got != code {
					t.Errorf("GET %s with the token: %d %v, want %d", path, got, err, code)
				}
			}
		})
	}
}

// TestHealthPortSpeaksTLS: with --tls-cert the health port serves HTTPS
// with the same certificate (the kubelet's HTTPS probes do not verify it;
// Prometheus may, and a token sent to /metrics stays encrypted).
func TestHealthPortSpeaksTLS(t *testing.T) {
	certFile, keyFile, pool := testserver.SelfSignedCert(t, t.TempDir())
	srv, _ := startServer(t, "--tls-cert", certFile, "--tls-key", keyFile, "--health-listen", "127.0.0.1:0")
	if !strings.HasPrefix(srv.HealthURL, "https://") {
		t.Fatalf("health URL %q", srv.HealthURL)
	}
	c := probeClient(&tls.Config{RootCAs: pool})
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if got, err := healthGet(c, srv.HealthURL+path, ""); got != http.StatusOK {
			t.Errorf("GET %s over TLS: %d %v", path, got, err)
		}
	}
	plain := "http://" + srv.HealthAddr + "/healthz"
	if got, _ := healthGet(c, plain, ""); got == http.StatusOK {
		t.Errorf("plain HTTP on the TLS health port answered 200")
	}
}
