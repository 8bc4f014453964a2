package cacheserver

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cacheserver.conf")
	conf := "# written by the operator\n" +
		"data-dir = /from-file\n" +
		"fanout = 4\n" +
		"size-limit = 1000\n" +
		"eviction-policy = \"least-recently-used\"\n" +
		"insecure-no-auth = true\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DISKCACHE_FANOUT":           "6",
		"DISKCACHE_DATABASE_TIMEOUT": "250ms",
	}
	cfg, err := LoadConfig([]string{"--config", file, "--data-dir", "/from-flag"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from-flag" || cfg.Fanout != 6 || cfg.SizeLimit != 1000 ||
		cfg.EvictionPolicy != "least-recently-used" || cfg.DatabaseTimeout != 250*time.Millisecond || !cfg.InsecureNoAuth {
		t.Fatalf("flags > env > file not honoured: %+v", cfg)
	}
	want := settings.Settings{SizeLimit: settings.Ptr[int64](1000), EvictionPolicy: settings.Ptr(settings.PolicyLeastRecentlyUsed)}
	if got := cfg.EngineSettings(); !got.Equal(want) {
		t.Fatalf("EngineSettings = %v; want only the settings given, %v", cfg.EngineSettings(), want)
	}
}

func TestLoadConfigIgnoresUnknownFileSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "newer.conf")
	_ = os.WriteFile(file, []byte("data-dir = /d\ninsecure-no-auth = true\nsetting-from-the-future = 1\n"), 0o600)
	cfg, err := LoadConfig([]string{"--config", file}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "setting-from-the-future") {
		t.Fatalf("Warnings = %v", cfg.Warnings)
	}
}

func TestLoadConfigDefaultsKeepStoredSettings(t *testing.T) {
	cfg, err := LoadConfig([]string{"--data-dir", "/d", "--insecure-no-auth"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.Fanout != 8 {
		t.Fatalf("defaults: %+v", cfg)
	}
	if s := cfg.EngineSettings(); !s.IsZero() {
		t.Fatalf("no engine setting was given, yet EngineSettings = %v", s)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	_ = os.WriteFile(bad, []byte("fanout 4\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.conf")
	_ = os.WriteFile(unknown, []byte("no-such-flag = 1\n"), 0o600)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--insecure-no-auth"}, nil, "--data-dir is required"},
		{[]string{"--data-dir", "/d"}, nil, "--token-file is required"},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "--fanout", "0"}, nil, "--fanout must be between 1 and 999"},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "--eviction-policy", "random"}, nil, "--eviction-policy"},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "--tls-cert", "c"}, nil, "--tls-cert and --tls-key go together"},
		{[]string{"--data-dir", "/d", "--insecure-no-auth"}, map[string]string{"DISKCACHE_FANOUT": "many"}, `fanout = "many"`},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "--page-size", "3000"}, nil, "--page-size must be a power of two from 512 to 65536, got 3000"},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "--max-key-bytes", "131073"}, nil, "--max-key-bytes must be at most 131072"},
		{[]string{"--config", bad}, nil, "want name = value"},
		// A misspelt name is ignored (a newer operator's setting must not
		// stop an older server), but said when the config then fails.
		{[]string{"--config", unknown}, nil, `config: ignoring unknown setting "no-such-flag"`},
		{[]string{"--data-dir", "/d", "--insecure-no-auth", "extra"}, nil, "unexpected arguments"},
	} {
		_, err := LoadConfig(tc.args, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadConfig(%v, %v) = %v; want an error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestCertReloaderPicksUpRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testserver.SelfSignedCert(t, dir)
	r, err := newCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.get(nil)
	// Renew: new files with a later modification time.
	testserver.SelfSignedCert(t, dir)
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(certFile, later, later); err != nil {
		t.Fatal(err)
	}
	r.checked = time.Time{} // the next get checks the files
	second, _ := r.get(nil)
	if bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Fatal("renewed certificate not picked up")
	}
}

func TestRebalanceRateFlag(t *testing.T) {
	env := func(string) string { return "" }
	cfg, err := LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth", "--rebalance-rate", "1048576"}, env)
	if err != nil || cfg.RebalanceRate != 1<<20 {
		t.Fatalf("--rebalance-rate 1048576: %v %d", err, cfg.RebalanceRate)
	}
	if cfg, err = LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth"}, env); err != nil || cfg.RebalanceRate != 64<<20 {
		t.Fatalf("default rate: %v %d", err, cfg.RebalanceRate)
	}
	if _, err = LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth", "--rebalance-rate", "-1"}, env); err == nil || !strings.Contains(err.Error(), "--rebalance-rate") {
		t.Fatalf("negative rate: %v", err)
	}
}

func TestMaxOpenCollectionsFlag(t *testing.T) {
	env := func(string) string { return "" }
	if cfg, err := LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth"}, env); err != nil || cfg.MaxOpenCollections != 256 {
		t.Fatalf("default: %v %d", err, cfg.MaxOpenCollections)
	}
	if cfg, err := LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth", "--max-open-collections", "0"}, env); err != nil || cfg.MaxOpenCollections != 0 {
		t.Fatalf("--max-open-collections 0: %v %d", err, cfg.MaxOpenCollections)
	}
	if _, err := LoadConfig([]string{"--data-dir", t.TempDir(), "--insecure-no-auth", "--max-open-collections", "-1"}, env); err == nil || !strings.Contains(err.Error(), "--max-open-collections") {
		t.Fatalf("negative: %v", err)
	}
}
