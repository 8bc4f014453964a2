package main

import (
	"context"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// defaultOptions are the library's defaults, as python-diskcache's Cache.
var defaultOptions = engine.Options{}

// serverOptions are the engine options the cacheserver gives each of its
// fanout databases (cacheserver.New): hot values get the share of one of
// DefaultFanout databases in the server's default 32 MiB.
var serverOptions = engine.Options{
	HotBytes:              (32 << 20) / engine.DefaultFanout,
	BackgroundCheckpoints: true,
	BatchYield:            true,
	Exclusive:             true,
	PageSize:              2048, // cacheserver.DefaultPageSize
}

// engineStore is one engine.Cache, shared by every worker goroutine.
type engineStore struct {
	ctx context.Context
	c   *engine.Cache
}

func openEngine(ctx context.Context, dir string, opts engine.Options) (store, error) {
	c, err := engine.Open(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	s := &engineStore{ctx: ctx, c: c}
	if err := prepopulate(engineHandle{s}); err != nil {
		_ = c.Close()
		return nil, err
	}
	return s, nil
}

func (s *engineStore) handle(int) (handle, error) { return engineHandle{s}, nil }
func (s *engineStore) close() error               { return s.c.Close() }

type engineHandle struct{ s *engineStore }

func (h engineHandle) get(key []byte) (bool, error) {
	it, ok, err := h.s.c.Get(h.s.ctx, kv.BytesKey(key), engine.GetOptions{})
	if ok {
		_ = it.Value.Data
	}
	return ok, err
}

func (h engineHandle) set(key, value []byte) (bool, error) {
	err := h.s.c.Set(h.s.ctx, kv.BytesKey(key), kv.Bytes(value), kv.SetOptions{})
	return err == nil, err
}

func (h engineHandle) del(key []byte) (bool, error) {
	return h.s.c.Delete(h.s.ctx, kv.BytesKey(key))
}

func (h engineHandle) close() error { return nil }
