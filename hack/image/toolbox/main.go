// Command toolbox is a small static client for looking at the local cluster
// from inside a pod, where no curl or shell exists: hack/image packs it as
// localhost/diskcache-toolbox. The smoke test and the end-to-end tests run it
// as a long-lived pod (`toolbox sleep`) and `kubectl exec` into it.
//
//	toolbox sleep                       wait for SIGTERM
//	toolbox http [flags] URL [-- [flags] URL]...
//	                                    HTTP requests, in order, over one
//	                                    keep-alive connection (so through a
//	                                    Service they reach the same pod)
//	toolbox lookup NAME                 resolve NAME with the pod's resolv.conf
//	toolbox tcp HOST:PORT               open (and close) a TCP connection
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
	case "http":
		client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
		for _, args := range splitArgs(os.Args[2:]) {
			if err = doHTTP(client, args); err != nil {
				break
			}
		}
	case "lookup":
		err = lookup(os.Args[2:])
	case "tcp":
		err = dialTCP(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "toolbox:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: toolbox sleep | http [-X METHOD] [-H 'K: V']... [-d BODY|@FILE] [-i] [-f] [-code] URL [-- ...] | lookup NAME | tcp HOST:PORT")
	os.Exit(2)
}

// splitArgs splits the arguments of several requests at "--".
func splitArgs(args []string) [][]string {
	var out [][]string
	start := 0
	for i, a := range args {
		if a == "--" {
			out = append(out, args[start:i])
			start = i + 1
		}
	}
	return append(out, args[start:])
}

func doHTTP(client *http.Client, args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	method := fs.String("X", "", "method (default GET, or POST with -d)")
	var hdrs headers
	fs.Var(&hdrs, "H", "request header 'Name: value' (repeatable)")
	data := fs.String("d", "", "request body; @FILE reads FILE, @- reads stdin")
	include := fs.Bool("i", false, "print the status line and response headers")
	fail := fs.Bool("f", false, "exit 22 on a status of 400 or more")
	codeOnly := fs.Bool("code", false, "print only the status code")
	timeout := fs.Duration("timeout", 30*time.Second, "request time limit")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	var body io.Reader
	hasBody := false
	for _, a := range args {
		if a == "-d" || strings.HasPrefix(a, "-d=") {
			hasBody = true
		}
	}
	if hasBody {
		switch {
		case *data == "@-":
			body = os.Stdin
		case strings.HasPrefix(*data, "@"):
			f, err := os.Open((*data)[1:])
			if err != nil {
				return err
			}
			defer f.Close()
			body = f
		default:
			body = strings.NewReader(*data)
		}
	}
	m := *method
	if m == "" {
		m = http.MethodGet
		if hasBody {
			m = http.MethodPost
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, m, fs.Arg(0), body)
	if err != nil {
		return err
	}
	for _, h := range hdrs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("bad header %q", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if *codeOnly {
		_, _ = io.Copy(io.Discard, resp.Body)
		fmt.Println(resp.StatusCode)
	} else {
		if *include {
			fmt.Printf("%s %s\n", resp.Proto, resp.Status)
			_ = resp.Header.Write(os.Stdout)
			fmt.Println()
		}
		if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
			return err
		}
	}
	if *fail && resp.StatusCode >= 400 {
		fmt.Fprintf(os.Stderr, "toolbox: %s %s: %s\n", m, fs.Arg(0), resp.Status)
		os.Exit(22)
	}
	return nil
}

func lookup(args []string) error {
	if len(args) != 1 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

func dialTCP(args []string) error {
	if len(args) != 1 {
		usage()
	}
	c, err := net.DialTimeout("tcp", args[0], 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("connected", c.RemoteAddr())
	return c.Close()
}
