package engine

import (
	"fmt"
	"math"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// policySQL holds what each policy adds to the schema and the queries.
type policySQL struct {
	index string // CREATE INDEX statement, "" for none
	onGet string // SET clause applied on a hit, "" for none
	order string // ORDER BY column for culling, "" when the policy never culls
}

var policies = map[settings.EvictionPolicy]policySQL{
	settings.PolicyNone: {},
	settings.PolicyLeastRecentlyStored: {
		index: "CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time)",
		order: "store_time",
	},
	settings.PolicyLeastRecentlyUsed: {
		index: "CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)",
		onGet: "access_time = ?",
		order: "access_time",
	},
	settings.PolicyLeastFrequentlyUsed: {
		index: "CREATE INDEX IF NOT EXISTS Cache_access_count ON Cache (access_count)",
		onGet: "access_count = access_count + 1",
		order: "access_count",
	},
}

// Settings are the persistent settings of a cache, python-diskcache's
// DEFAULT_SETTINGS.
type Settings struct {
	Statistics         bool
	TagIndex           bool
	EvictionPolicy     settings.EvictionPolicy
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
		EvictionPolicy:     settings.PolicyLeastRecentlyStored,
		SizeLimit:          1 << 30,
		CullLimit:          10,
		SQLiteAutoVacuum:   1,
		SQLiteCacheSize:    settings.SQLiteCachePages,
		SQLiteJournalMode:  "wal",
		SQLiteMmapSize:     1 << 26,
		SQLiteSynchronous:  1,
		DiskMinFileSize:    1 << 15,
		DiskPickleProtocol: 5,
	}
}

var journalModes = map[string]bool{"wal": true, "delete": true, "truncate": true, "persist": true, "memory": true, "off": true}

// Get returns the setting called name as stored in the Settings table.
func (s *Settings) Get(name settings.Name) (any, error) {
	switch name {
	case settings.NameStatistics:
		return boolInt(s.Statistics), nil
	case settings.NameTagIndex:
		return boolInt(s.TagIndex), nil
	case settings.NameEvictionPolicy:
		return string(s.EvictionPolicy), nil
	case settings.NameSizeLimit:
		return s.SizeLimit, nil
	case settings.NameCullLimit:
		return s.CullLimit, nil
	case settings.NameSQLiteAutoVacuum:
		return s.SQLiteAutoVacuum, nil
	case settings.NameSQLiteCacheSize:
		return s.SQLiteCacheSize, nil
	case settings.NameSQLiteJournalMode:
		return s.SQLiteJournalMode, nil
	case settings.NameSQLiteMmapSize:
		return s.SQLiteMmapSize, nil
	case settings.NameSQLiteSynchronous:
		return s.SQLiteSynchronous, nil
	case settings.NameDiskMinFileSize:
		return s.DiskMinFileSize, nil
	case settings.NameDiskPickleProtocol:
		return s.DiskPickleProtocol, nil
	}
	return nil, fmt.Errorf("%w: unknown setting %q", kv.ErrInvalidSetting, name)
}

// Set validates value and stores it as the setting called name. Integers
// may be given as any Go integer, a whole float or a bool; booleans as bool
// or 0/1.
func (s *Settings) Set(name settings.Name, value any) error {
	switch name {
	case settings.NameStatistics, settings.NameTagIndex:
		n, err := asInt(name, value)
		if err != nil {
			return err
		}
		if name == settings.NameStatistics {
			s.Statistics = n != 0
		} else {
			s.TagIndex = n != 0
		}
		return nil
	case settings.NameEvictionPolicy:
		p, ok := asString(value)
		if !ok || !settings.EvictionPolicy(p).Valid() {
			return fmt.Errorf("%w: %s must be one of %s; got %v", kv.ErrInvalidSetting, name, settings.PolicyList(), value)
		}
		s.EvictionPolicy = settings.EvictionPolicy(p)
		return nil
	case settings.NameSQLiteJournalMode:
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
	case settings.NameSizeLimit, settings.NameCullLimit, settings.NameDiskMinFileSize:
		if n < 0 {
			return fmt.Errorf("%w: %s must not be negative, got %d", kv.ErrInvalidSetting, name, n)
		}
	}
	switch name {
	case settings.NameSizeLimit:
		s.SizeLimit = n
	case settings.NameCullLimit:
		s.CullLimit = n
	case settings.NameSQLiteAutoVacuum:
		s.SQLiteAutoVacuum = n
	case settings.NameSQLiteCacheSize:
		s.SQLiteCacheSize = n
	case settings.NameSQLiteMmapSize:
		s.SQLiteMmapSize = n
	case settings.NameSQLiteSynchronous:
		s.SQLiteSynchronous = n
	case settings.NameDiskMinFileSize:
		s.DiskMinFileSize = n
	case settings.NameDiskPickleProtocol:
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
	case settings.EvictionPolicy:
		return string(t), true
	case []byte:
		return string(t), true
	}
	return "", false
}

func asInt(name settings.Name, v any) (int64, error) {
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
		// FanoutCache stores size_limit / fanout as a REAL, not always whole.
		if !math.IsNaN(t) && math.Abs(t) < 1<<63 {
			return int64(t), nil
		}
	}
	return 0, fmt.Errorf("%w: %s must be an integer, got %v", kv.ErrInvalidSetting, name, v)
}

// Typed returns every setting as the server answers them (GET
// /v1/settings): booleans as booleans, not 0/1 as stored.
func (s Settings) Typed() settings.Settings {
	return settings.Settings{
		SizeLimit:          &s.SizeLimit,
		EvictionPolicy:     &s.EvictionPolicy,
		CullLimit:          &s.CullLimit,
		Statistics:         &s.Statistics,
		TagIndex:           &s.TagIndex,
		DiskMinFileSize:    &s.DiskMinFileSize,
		DiskPickleProtocol: &s.DiskPickleProtocol,
		SQLiteAutoVacuum:   &s.SQLiteAutoVacuum,
		SQLiteCacheSize:    &s.SQLiteCacheSize,
		SQLiteJournalMode:  &s.SQLiteJournalMode,
		SQLiteMmapSize:     &s.SQLiteMmapSize,
		SQLiteSynchronous:  &s.SQLiteSynchronous,
	}
}
