package cacheserver

import (
	"context"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Store is the key API the handlers serve: the server's FanoutCache and
// every named sub-cache (an engine.Cache) satisfy it.
type Store interface {
	Set(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) error
	Add(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error)
	Replace(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error)
	Get(ctx context.Context, key kv.Key, opts engine.GetOptions) (engine.Item, bool, error)
	Pop(ctx context.Context, key kv.Key, opts engine.GetOptions) (engine.Item, bool, error)
	Touch(ctx context.Context, key kv.Key, expire kv.Expiry) (bool, error)
	Delete(ctx context.Context, key kv.Key) (bool, error)
	Contains(ctx context.Context, key kv.Key) (bool, error)
	Incr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error)
	Decr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error)

	Expire(ctx context.Context, now float64) (int64, error)
	Evict(ctx context.Context, tag kv.Key) (int64, error)
	Cull(ctx context.Context) (int64, error)
	Clear(ctx context.Context) (int64, error)
	Check(ctx context.Context, fix bool) ([]kv.Warning, error)
	Stats(ctx context.Context, enable, reset bool) (hits, misses int64, err error)
	Volume(ctx context.Context) (int64, error)
	Len(ctx context.Context) (int64, error)
	Reset(ctx context.Context, name settings.Name, value any) error
	Settings() engine.Settings
	CreateTagIndex(ctx context.Context) error
	DropTagIndex(ctx context.Context) error
}

var _ Store = (*engine.Cache)(nil)
