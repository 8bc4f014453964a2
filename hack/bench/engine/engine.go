package main

import (
	"context"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// engineStore is one engine.Cache with default options, shared by every
// worker goroutine.
type engineStore struct {
	ctx context.Context
	c   *engine.Cache
}

func openEngine(ctx context.Context, dir string) (store, error) {
	c, err := engine.Open(ctx, dir, engine.Options{})
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
