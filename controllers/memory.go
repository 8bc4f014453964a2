package controllers

import (
	"fmt"
	"math"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// The cacheserver's defaults a shard's memory estimate counts (see
// docs/operations.md, Memory); what the rest of the estimate is made of is
// in package settings (settings.SQLiteCachePages, settings.MemoryBaseline),
// which the server sets its Go memory limit from.
// TestMemoryEstimateFollowsTheServer checks them against the server's.
const (
	// serverDefaultPageSize and serverDefaultHotValueBytes are the
	// cacheserver's --page-size and --hot-value-bytes defaults.
	serverDefaultPageSize      = 2048
	serverDefaultHotValueBytes = 32 << 20
)

// memoryEstimate is what a shard is expected to use at most in steady
// state: hotValueBytes, one full SQLite page cache per fanout database, and
// settings.MemoryBaseline.
func memoryEstimate(spec *cachev1alpha1.DiskCacheSpec) (total, hot, sqlite int64) {
	hot = serverDefaultHotValueBytes
	if spec.HotValueBytes != nil {
		hot = bytesOf(spec.HotValueBytes)
	}
	page := int64(serverDefaultPageSize)
	if spec.PageSize != nil {
		page = int64(*spec.PageSize)
	}
	fanout := int64(spec.Fanout)
	if fanout <= 0 {
		fanout = int64(cachev1alpha1.DefaultFanout)
	}
	sqlite = fanout * settings.SQLiteCacheBytes(settings.SQLiteCachePages, page)
	if rest := sqlite + settings.MemoryBaseline; hot > math.MaxInt64-rest {
		return math.MaxInt64, hot, sqlite // no limit is enough
	}
	return hot + sqlite + settings.MemoryBaseline, hot, sqlite
}

// memoryProblem is a MemoryLimitTooLow problem when spec.resources sets a
// memory limit below memoryEstimate: the shards would be OOMKilled once
// their caches fill.
func memoryProblem(dc *cachev1alpha1.DiskCache) *problem {
	limit, ok := dc.Spec.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return nil
	}
	total, hot, sqlite := memoryEstimate(&dc.Spec)
	if bytesOf(&limit) >= total {
		return nil
	}
	mi := func(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
	fanout := dc.Spec.Fanout
	if fanout <= 0 {
		fanout = cachev1alpha1.DefaultFanout // as memoryEstimate counts it
	}
	return &problem{cachev1alpha1.ReasonMemoryLimitTooLow, fmt.Sprintf(
		"spec.resources.limits.memory %s is below the %s a shard may use: hotValueBytes %s + %d fanout databases × %d SQLite cache pages of %d bytes (%s) + %s for the Go runtime and connections; the shards are OOMKilled once their caches fill: raise the limit or lower spec.hotValueBytes (docs/operations.md, Memory)",
		limit.String(), mi(total), mi(hot), fanout, settings.SQLiteCachePages, sqlite/int64(fanout)/settings.SQLiteCachePages, mi(sqlite), mi(settings.MemoryBaseline))}
}

// memoryWarned remembers, per DiskCache, the MemoryLimitTooLow message last
// raised as an Event, so each spec gets one Event rather than one per
// reconcile.
type memoryWarned struct{ m sync.Map }

// fresh tells whether p (nil: no problem) was not reported yet, and
// remembers it.
func (w *memoryWarned) fresh(dc types.UID, p *problem) bool {
	if p == nil {
		w.m.Delete(dc)
		return false
	}
	last, ok := w.m.Swap(dc, p.message)
	return !ok || last.(string) != p.message
}
