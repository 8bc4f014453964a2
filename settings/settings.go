// Package settings is the contract of a cache's engine settings and of the
// cacheserver's configuration, shared by the engine, the server, the Go
// client and the operator: the setting names (as on the wire and in the
// engine's Settings table), the eviction policies, which settings are live,
// and how a setting is spelled as a flag or config-file key (eviction-policy)
// and as a DiskCache field (evictionPolicy). It needs no cgo.
package settings

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Name is a setting's name on the wire (GET and PATCH /v1/settings) and in
// the engine's Settings table: python-diskcache's name.
type Name string

// The settings of a cache, python-diskcache's DEFAULT_SETTINGS.
const (
	NameSizeLimit          Name = "size_limit"
	NameEvictionPolicy     Name = "eviction_policy"
	NameCullLimit          Name = "cull_limit"
	NameStatistics         Name = "statistics"
	NameTagIndex           Name = "tag_index"
	NameDiskMinFileSize    Name = "disk_min_file_size"
	NameDiskPickleProtocol Name = "disk_pickle_protocol"
	NameSQLiteAutoVacuum   Name = "sqlite_auto_vacuum"
	NameSQLiteCacheSize    Name = "sqlite_cache_size"
	NameSQLiteJournalMode  Name = "sqlite_journal_mode"
	NameSQLiteMmapSize     Name = "sqlite_mmap_size"
	NameSQLiteSynchronous  Name = "sqlite_synchronous"
)

// live are the settings a running server changes through PATCH
// /v1/settings; python-diskcache changes exactly these at run time.
var live = []Name{NameEvictionPolicy, NameSizeLimit, NameCullLimit, NameStatistics, NameTagIndex}

// Live returns the names of the live settings.
func Live() []Name { return slices.Clone(live) }

// IsLive reports whether n can change on a running server.
func (n Name) IsLive() bool { return slices.Contains(live, n) }

// Flag is the cacheserver flag and config-file key of the setting:
// eviction_policy is --eviction-policy.
func (n Name) Flag() Flag { return Flag(strings.ReplaceAll(string(n), "_", "-")) }

// Field is the setting's field name in a DiskCache spec: eviction_policy is
// evictionPolicy.
func (n Name) Field() string {
	parts := strings.Split(string(n), "_")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

// Names returns every setting name, sorted (the order python-diskcache
// applies its pragmas in).
func Names() []Name {
	out := slices.Clone(fieldNames)
	slices.Sort(out)
	return out
}

// JoinNames lists names for messages: "a, b, c".
func JoinNames(names []Name) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// EvictionPolicy decides which items culling removes first.
type EvictionPolicy string

// The four eviction policies of python-diskcache.
const (
	PolicyNone                EvictionPolicy = "none"
	PolicyLeastRecentlyStored EvictionPolicy = "least-recently-stored"
	PolicyLeastRecentlyUsed   EvictionPolicy = "least-recently-used"
	PolicyLeastFrequentlyUsed EvictionPolicy = "least-frequently-used"
)

var policies = []EvictionPolicy{PolicyNone, PolicyLeastRecentlyStored, PolicyLeastRecentlyUsed, PolicyLeastFrequentlyUsed}

// Policies returns the four eviction policies.
func Policies() []EvictionPolicy { return slices.Clone(policies) }

// Valid reports whether p is one of the four policies.
func (p EvictionPolicy) Valid() bool { return slices.Contains(policies, p) }

// PolicyList lists the policies for messages and help texts:
// "none, least-recently-stored, least-recently-used, least-frequently-used".
func PolicyList() string {
	s := make([]string, len(policies))
	for i, p := range policies {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// Settings are a cache's settings as the server answers and takes them
// (GET and PATCH /v1/settings). A nil field is a setting not given: a PATCH
// body sets only some, a server's answer has them all. The JSON names are
// the Names.
type Settings struct {
	SizeLimit          *int64          `json:"size_limit,omitempty"`
	EvictionPolicy     *EvictionPolicy `json:"eviction_policy,omitempty"`
	CullLimit          *int64          `json:"cull_limit,omitempty"`
	Statistics         *bool           `json:"statistics,omitempty"`
	TagIndex           *bool           `json:"tag_index,omitempty"`
	DiskMinFileSize    *int64          `json:"disk_min_file_size,omitempty"`
	DiskPickleProtocol *int64          `json:"disk_pickle_protocol,omitempty"`
	SQLiteAutoVacuum   *int64          `json:"sqlite_auto_vacuum,omitempty"`
	SQLiteCacheSize    *int64          `json:"sqlite_cache_size,omitempty"`
	SQLiteJournalMode  *string         `json:"sqlite_journal_mode,omitempty"`
	SQLiteMmapSize     *int64          `json:"sqlite_mmap_size,omitempty"`
	SQLiteSynchronous  *int64          `json:"sqlite_synchronous,omitempty"`
}

// fieldNames are the Names of the fields of Settings, in field order.
var fieldNames = func() []Name {
	t := reflect.TypeFor[Settings]()
	out := make([]Name, t.NumField())
	for i := range out {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out[i] = Name(tag)
	}
	return out
}()

// Each calls fn with the name and value (int64, bool, string or
// EvictionPolicy) of every setting given in s, in field order.
func (s Settings) Each(fn func(Name, any)) {
	v := reflect.ValueOf(s)
	for i, n := range fieldNames {
		if f := v.Field(i); !f.IsNil() {
			fn(n, f.Elem().Interface())
		}
	}
}

// Values returns the settings given in s by name.
func (s Settings) Values() map[Name]any {
	out := map[Name]any{}
	s.Each(func(n Name, v any) { out[n] = v })
	return out
}

// Names returns the names of the settings given in s, in field order.
func (s Settings) Names() []Name {
	var out []Name
	s.Each(func(n Name, _ any) { out = append(out, n) })
	return out
}

// Live returns the live settings of s.
func (s Settings) Live() Settings {
	var out Settings
	src, dst := reflect.ValueOf(s), reflect.ValueOf(&out).Elem()
	for i, n := range fieldNames {
		if n.IsLive() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	return out
}

// Diff returns the settings given in s whose value in current differs or is
// missing: what a PATCH must send to make current agree with s.
func (s Settings) Diff(current Settings) Settings {
	var out Settings
	want, got, dst := reflect.ValueOf(s), reflect.ValueOf(current), reflect.ValueOf(&out).Elem()
	for i := range fieldNames {
		w, g := want.Field(i), got.Field(i)
		if !w.IsNil() && (g.IsNil() || w.Elem().Interface() != g.Elem().Interface()) {
			dst.Field(i).Set(w)
		}
	}
	return out
}

// Equal reports whether s and o give the same settings with the same values.
func (s Settings) Equal(o Settings) bool { return s.Diff(o).IsZero() && o.Diff(s).IsZero() }

// IsZero reports whether s gives no setting.
func (s Settings) IsZero() bool { return s == Settings{} }

// String lists the given settings as name=value.
func (s Settings) String() string {
	var b strings.Builder
	s.Each(func(n Name, v any) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", n, v)
	})
	return "{" + b.String() + "}"
}

// Ptr returns a pointer to v, for filling Settings.
func Ptr[T any](v T) *T { return &v }
