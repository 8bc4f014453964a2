package cacheserver_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// The server creates its databases with --page-size (DefaultPageSize when
// not given); a data directory it finds keeps the page size its databases
// were created with, which GET /v1/config reports next to --page-size.
func TestServerCreatesDatabasesWithItsPageSize(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.Start(t, testserver.Options{DataDir: dir})
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := pageSize(t, filepath.Join(dir, "000", "cache.db")); got != cacheserver.DefaultPageSize {
		t.Fatalf("page size of a database the server created = %d, want --page-size's default %d", got, cacheserver.DefaultPageSize)
	}

	srv = testserver.Start(t, testserver.Options{DataDir: dir, Args: []string{"--page-size", "4096"}})
	checkConfigPageSizes(t, srv, 4096, slices.Repeat([]int64{cacheserver.DefaultPageSize}, 8))
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := pageSize(t, filepath.Join(dir, "000", "cache.db")); got != cacheserver.DefaultPageSize {
		t.Fatalf("page size after a restart with --page-size 4096 = %d, want the %d it was created with", got, cacheserver.DefaultPageSize)
	}

	other := t.TempDir()
	srv = testserver.Start(t, testserver.Options{DataDir: other, Args: []string{"--page-size", "4096"}})
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := pageSize(t, filepath.Join(other, "000", "cache.db")); got != 4096 {
		t.Fatalf("page size of a database created with --page-size 4096 = %d", got)
	}
}

// checkConfigPageSizes checks what GET /v1/config says of page sizes.
func checkConfigPageSizes(t *testing.T, srv *testserver.Server, want int, wantDatabases []int64) {
	t.Helper()
	cfg := serverConfig(t, srv)
	if cfg.PageSize != want || !slices.Equal(cfg.DatabasePageSizes, wantDatabases) {
		t.Errorf("GET /v1/config: page_size %d, database_page_sizes %v; want %d, %v",
			cfg.PageSize, cfg.DatabasePageSizes, want, wantDatabases)
	}
}

func pageSize(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("PRAGMA page_size").Scan(&n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// serverConfig is what GET /v1/config of srv answers.
func serverConfig(t *testing.T, srv *testserver.Server) *wire.ServerConfig {
	t.Helper()
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := c.ServerConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
