// Command cacheserver serves a DiskCache directory over HTTP. Flags,
// DISKCACHE_* environment variables and a --config file configure it; see
// `cacheserver -h` and docs/api/openapi.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
)

func main() {
	sysmonErr := withSysmonSetting() // returns only when the server runs without it
	os.Exit(exitStatus(run(os.Args[1:], sysmonErr), os.Stderr))
}

// exitStatus is the process's exit status for what run returned, after
// writing the error, if any, to w. -h and --help (flag.ErrHelp: the usage
// is already written) exit 0. The error is prefixed with "cacheserver: " once:
// those of package cacheserver's New already start with it.
func exitStatus(err error, w io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "cacheserver: ") {
		msg = "cacheserver: " + msg
	}
	fmt.Fprintln(w, msg)
	return 1
}

func run(args []string, sysmonErr error) error {
	cfg, err := cacheserver.LoadConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if cfg.LogFormat == "text" {
		handler = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(handler)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if sysmonErr != nil {
		log.Warn("the Go runtime's monitor thread will cost more CPU", slog.Any("error", sysmonErr))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	srv, err := cacheserver.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if err := srv.Serve(ctx, l); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
