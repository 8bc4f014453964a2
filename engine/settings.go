package engine

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// EvictionPolicy decides which items culling removes first.
type EvictionPolicy string

// The four eviction policies of python-diskcache.
const (
	PolicyNone                EvictionPolicy = "none"
	PolicyLeastRecentlyStored EvictionPolicy = "least-recently-stored"
	PolicyLeastRecentlyUsed   EvictionPolicy = "least-recently-used"
	PolicyLeastFrequentlyUsed EvictionPolicy = "least-frequently-used"
)

// policySQL holds what each policy adds to the schema and the queries.
type policySQL struct {
	index  string // CREATE INDEX statement, "" for none
	onGet  string // SET clause applied on a hit, "" for none
	order  string // ORDER BY column for culling, "" when the policy never culls
	exists bool
}

var policies = map[EvictionPolicy]policySQL{
	PolicyNone: {exists: true},
	PolicyLeastRecentlyStored: {
		index:  "CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time)",
		order:  "store_time",
		exists: true,
	},
	PolicyLeastRecentlyUsed: {
		index:  "CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)",
		onGet:  "access_time = ?",
		order:  "access_time",
		exists: true,
	},
	PolicyLeastFrequentlyUsed: {
		index:  "CREATE INDEX IF NOT EXISTS Cache_access_count ON Cache (access_count)",
		onGet:  "access_count = access_count + 1",
		order:  "access_count",
		exists: true,
	},
}

// Valid reports whether p is one of the four policies.
func (p EvictionPolicy) Valid() bool { return policies[p].exists }

// Setting names, as stored in the Settings table.
const (
	SettingStatistics         = "statistics"
	SettingTagIndex           = "tag_index"
	SettingEvictionPolicy     = "eviction_policy"
	SettingSizeLimit          = "size_limit"
	SettingCullLimit          = "cull_limit"
	SettingSQLiteAutoVacuum   = "sqlite_auto_vacuum"
	SettingSQLiteCacheSize    = "sqlite_cache_size"
	SettingSQLiteJournalMode  = "sqlite_journal_mode"
	SettingSQLiteMmapSize     = "sqlite_mmap_size"
	SettingSQLiteSynchronous  = "sqlite_synchronous"
	SettingDiskMinFileSize    = "disk_min_file_size"
	SettingDiskPickleProtocol = "disk_pickle_protocol"
)

// Settings are the persistent settings of a cache, python-diskcache's
// DEFAULT_SETTINGS.
type Settings struct {
	Statistics         bool
	TagIndex           bool
	EvictionPolicy     EvictionPolicy
	SizeLimit          int64
	CullLimit          int64
	SQLiteAutoVacuum   int64
	SQLiteCacheSize    int64
	SQLiteJournalMode  string
	SQLiteMmapSize     int64
	SQLiteSynchronous  int64
	DiskMinFileSize    int64
	DiskPickleProtocol int64
}

// DefaultSettings returns python-diskcache's defaults.
func DefaultSettings() Settings {
	return Settings{
		EvictionPolicy:     PolicyLeastRecentlyStored,
		SizeLimit:          1 << 30,
		CullLimit:          10,
		SQLiteAutoVacuum:   1,
		SQLiteCacheSize:    1 << 13,
		SQLiteJournalMode:  "wal",
		SQLiteMmapSize:     1 << 26,
		SQLiteSynchronous:  1,
		DiskMinFileSize:    1 << 15,
		DiskPickleProtocol: 5,
	}
}

// settingNames lists every setting in sorted order (the order python-diskcache
// applies pragmas in).
var settingNames = func() []string {
	names := []string{
		SettingStatistics, SettingTagIndex, SettingEvictionPolicy, SettingSizeLimit,
		SettingCullLimit, SettingSQLiteAutoVacuum, SettingSQLiteCacheSize,
		SettingSQLiteJournalMode, SettingSQLiteMmapSize, SettingSQLiteSynchronous,
		SettingDiskMinFileSize, SettingDiskPickleProtocol,
	}
	sort.Strings(names)
	return names
}()

// SettingNames returns the names of all settings, sorted.
func SettingNames() []string { return append([]string(nil), settingNames...) }

var journalModes = map[string]bool{"wal": true, "delete": true, "truncate": true, "persist": true, "memory": true, "off": true}

// Get returns the setting called name as stored in the Settings table.
func (s *Settings) Get(name string) (any, error) {
	switch name {
	case SettingStatistics:
		return boolInt(s.Statistics), nil
	case SettingTagIndex:
		return boolInt(s.TagIndex), nil
	case SettingEvictionPolicy:
		return string(s.EvictionPolicy), nil
	case SettingSizeLimit:
		return s.SizeLimit, nil
	case SettingCullLimit:
		return s.CullLimit, nil
	case SettingSQLiteAutoVacuum:
		return s.SQLiteAutoVacuum, nil
	case SettingSQLiteCacheSize:
		return s.SQLiteCacheSize, nil
	case SettingSQLiteJournalMode:
		return s.SQLiteJournalMode, nil
	case SettingSQLiteMmapSize:
		return s.SQLiteMmapSize, nil
	case SettingSQLiteSynchronous:
		return s.SQLiteSynchronous, nil
	case SettingDiskMinFileSize:
		return s.DiskMinFileSize, nil
	case SettingDiskPickleProtocol:
		return s.DiskPickleProtocol, nil
	}
	return nil, fmt.Errorf("%w: unknown setting %q", kv.ErrInvalidSetting, name)
}

// Set validates value and stores it as the setting called name. Integers
// may be given as any Go integer, a whole float or a bool; booleans as bool
// or 0/1.
func (s *Settings) Set(name string, value any) error {
	switch name {
	case SettingStatistics, SettingTagIndex:
		n, err := asInt(name, value)
		if err != nil {
			return err
		}
		if name == SettingStatistics {
			s.Statistics = n != 0
		} else {
			s.TagIndex = n != 0
		}
		return nil
	case SettingEvictionPolicy:
		p, ok := asString(value)
		if !ok || !EvictionPolicy(p).Valid() {
			return fmt.Errorf("%w: eviction_policy must be one of none, least-recently-stored, least-recently-used, least-frequently-used; got %v", kv.ErrInvalidSetting, value)
		}
		s.EvictionPolicy = EvictionPolicy(p)
		return nil
	case SettingSQLiteJournalMode:
		m, ok := asString(value)
		m = strings.ToLower(m)
		if !ok || !journalModes[m] {
			return fmt.Errorf("%w: sqlite_journal_mode %v is not a journal mode", kv.ErrInvalidSetting, value)
		}
		s.SQLiteJournalMode = m
		return nil
	}
	n, err := asInt(name, value)
	if err != nil {
		return err
	}
	switch name {
	case SettingSizeLimit, SettingCullLimit, SettingDiskMinFileSize:
		if n < 0 {
			return fmt.Errorf("%w: %s must not be negative, got %d", kv.ErrInvalidSetting, name, n)
		}
	}
	switch name {
	case SettingSizeLimit:
		s.SizeLimit = n
	case SettingCullLimit:
		s.CullLimit = n
	case SettingSQLiteAutoVacuum:
		s.SQLiteAutoVacuum = n
	case SettingSQLiteCacheSize:
		s.SQLiteCacheSize = n
	case SettingSQLiteMmapSize:
		s.SQLiteMmapSize = n
	case SettingSQLiteSynchronous:
		s.SQLiteSynchronous = n
	case SettingDiskMinFileSize:
		s.DiskMinFileSize = n
	case SettingDiskPickleProtocol:
		s.DiskPickleProtocol = n
	default:
		return fmt.Errorf("%w: unknown setting %q", kv.ErrInvalidSetting, name)
	}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func asString(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case EvictionPolicy:
		return string(t), true
	case []byte:
		return string(t), true
	}
	return "", false
}

func asInt(name string, v any) (int64, error) {
	switch t := v.(type) {
	case bool:
		return boolInt(t), nil
	case int:
		return int64(t), nil
	case int32:
		return int64(t), nil
	case int64:
		return t, nil
	case uint32:
		return int64(t), nil
	case float64:
		// FanoutCache stores size_limit / shards as a REAL, not always whole.
		if !math.IsNaN(t) && math.Abs(t) < 1<<63 {
			return int64(t), nil
		}
	}
	return 0, fmt.Errorf("%w: %s must be an integer, got %v", kv.ErrInvalidSetting, name, v)
}
