package settings

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

// The JSON names of Settings are exactly the Name constants.
func TestSettingsFieldsAreTheNames(t *testing.T) {
	want := []Name{
		NameCullLimit, NameDiskMinFileSize, NameDiskPickleProtocol, NameEvictionPolicy, NameSizeLimit,
		NameSQLiteAutoVacuum, NameSQLiteCacheSize, NameSQLiteJournalMode, NameSQLiteMmapSize,
		NameSQLiteSynchronous, NameStatistics, NameTagIndex,
	}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	for _, n := range Live() {
		if !slices.Contains(want, n) {
			t.Errorf("live setting %s is not a setting", n)
		}
	}
}

func TestSpellings(t *testing.T) {
	for _, c := range []struct {
		n     Name
		flag  Flag
		field string
	}{
		{NameEvictionPolicy, "eviction-policy", "evictionPolicy"},
		{NameSizeLimit, "size-limit", "sizeLimit"},
		{NameStatistics, "statistics", "statistics"},
		{NameDiskMinFileSize, "disk-min-file-size", "diskMinFileSize"},
	} {
		if c.n.Flag() != c.flag || c.n.Field() != c.field {
			t.Errorf("%s: flag %s, field %s; want %s, %s", c.n, c.n.Flag(), c.n.Field(), c.flag, c.field)
		}
	}
	if FlagShardIndex.Arg() != "--shard-index" || FlagShardIndex.Env() != "DISKCACHE_SHARD_INDEX" {
		t.Errorf("shard-index: %s, %s", FlagShardIndex.Arg(), FlagShardIndex.Env())
	}
	if NameStatistics.IsLive() != true || NameDiskMinFileSize.IsLive() {
		t.Error("IsLive is wrong")
	}
}

// A server's answer decodes into typed values that compare exactly, and a
// PATCH body carries only the settings given.
func TestDiffAndWire(t *testing.T) {
	var current Settings
	if err := json.Unmarshal([]byte(`{"size_limit":1073741824,"eviction_policy":"least-recently-stored","cull_limit":10,"statistics":false,"tag_index":true,"sqlite_journal_mode":"wal"}`), &current); err != nil {
		t.Fatal(err)
	}
	want := Settings{SizeLimit: Ptr[int64](1 << 30), EvictionPolicy: Ptr(PolicyLeastRecentlyUsed), Statistics: Ptr(false), CullLimit: Ptr[int64](10)}
	diff := want.Diff(current)
	if !diff.Equal(Settings{EvictionPolicy: Ptr(PolicyLeastRecentlyUsed)}) {
		t.Errorf("diff = %v", diff)
	}
	body, err := json.Marshal(diff)
	if err != nil || string(body) != `{"eviction_policy":"least-recently-used"}` {
		t.Errorf("PATCH body %s, %v", body, err)
	}
	current.CullLimit = nil
	if d := want.Diff(current); !reflect.DeepEqual(d.Names(), []Name{NameEvictionPolicy, NameCullLimit}) {
		t.Errorf("diff with a missing setting = %v", d)
	}
	if live := current.Live(); !slices.Equal(live.Names(), []Name{NameSizeLimit, NameEvictionPolicy, NameStatistics, NameTagIndex}) {
		t.Errorf("Live() = %v", live)
	}
	if v := current.Values(); v[NameTagIndex] != true || v[NameSizeLimit] != int64(1<<30) || v[NameEvictionPolicy] != PolicyLeastRecentlyStored {
		t.Errorf("Values() = %v", v)
	}
}

func TestPolicies(t *testing.T) {
	for _, p := range Policies() {
		if !p.Valid() {
			t.Errorf("%s not valid", p)
		}
	}
	if EvictionPolicy("least-recently-written").Valid() || len(Policies()) != 4 {
		t.Error("Valid accepts an unknown policy")
	}
	if PolicyList() != "none, least-recently-stored, least-recently-used, least-frequently-used" {
		t.Errorf("PolicyList() = %q", PolicyList())
	}
}

// SQLite's cache_size is pages when positive and KiB when negative.
func TestSQLiteCacheBytes(t *testing.T) {
	if got := SQLiteCacheBytes(SQLiteCachePages, 2048); got != 16<<20 {
		t.Errorf("8192 pages of 2048 bytes: %d", got)
	}
	if got := SQLiteCacheBytes(-2000, 4096); got != 2000<<10 {
		t.Errorf("cache_size -2000: %d, want 2000 KiB", got)
	}
}
