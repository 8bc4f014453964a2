package cacheserver

import (
	"bufio"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Config is everything the cacheserver binary can be told. Each field has a
// flag --<name>, an environment variable DISKCACHE_<NAME> (upper case,
// dashes as underscores) and a line "<name> = <value>" in the --config
// file; flags win over the environment, which wins over the file.
type Config struct {
	DataDir         string
	Listen          string
	Fanout          int
	DatabaseTimeout time.Duration
	TokenFile       string
	InsecureNoAuth  bool
	TLSCert         string
	TLSKey          string
	MaxKeyBytes     int64
	MaxValueBytes   int64
	RequestTimeout  time.Duration
	ShutdownTimeout time.Duration
	// BodyTimeout bounds how long a request body may go without a byte
	// arriving; MaxConnections caps the connections held open (0: half the
	// process's file descriptor limit).
	BodyTimeout    time.Duration
	MaxConnections int
	// HealthListen is a second address serving only /healthz, /readyz
	// and /metrics, outside MaxConnections, for the kubelet and
	// Prometheus (healthport.go); empty: none.
	HealthListen string
	// DiskReserveBytes is held back on the data volume for deletes once
	// it is full.
	DiskReserveBytes int64
	// CollectionIdleTimeout closes the database connections of named
	// caches, deques and indexes unused that long (0: never).
	CollectionIdleTimeout time.Duration
	// MaxOpenCollections bounds the named caches, deques and indexes that
	// hold database connections (SQLite's memory and file descriptors):
	// using one more closes those of the one used least recently (0: no
	// bound).
	MaxOpenCollections int
	// CollectionMaxBytes bounds each deque, index and non-culling named
	// cache (0: one fanout database's share of size_limit).
	CollectionMaxBytes int64
	// FsyncValueFiles syncs every new value file (and the directories
	// naming it) before its row commits; off, as in python-diskcache, a
	// power loss may leave recent rows naming empty or short files, which
	// read as misses.
	FsyncValueFiles bool
	// HotValueBytes keeps that many bytes of the values read last in
	// memory, so gets they answer run no SQL (0: none). The server must be
	// the only writer of DataDir, since a change another process made
	// there would not be seen by the values in memory: with HotValueBytes
	// it opens the fanout databases exclusively (engine Options.Exclusive).
	HotValueBytes int64
	// PageSize is the SQLite page size of the databases the server
	// creates (engine Options.PageSize); those that exist keep theirs.
	PageSize int
	// MemoryLimit is the memory the container may use (0: not known). New
	// sets the process's Go memory limit from it (memory.go), unless
	// GOMEMLIMIT is in the environment.
	MemoryLimit int64
	// MetricsRequireToken serves /metrics to the data (or admin) token
	// only; MetricsInterval is the least time between two renderings of
	// /metrics (scrapes in between wait for the next; 0: no bound).
	MetricsRequireToken bool
	MetricsInterval     time.Duration
	LogFormat           string
	// syncFile replaces (*os.File).Sync when FsyncValueFiles is on (tests).
	syncFile func(*os.File) error

	// Sharding: which shard this server is (-1: a standalone server that
	// routes nothing), the shards of the initial topology, its epoch, a
	// mounted topology file, the operator's credential for topology changes,
	// and the CA that verifies peers' certificates when forwarding over TLS.
	ShardIndex     int
	Peers          string
	Epoch          int64
	TopologyFile   string
	AdminTokenFile string
	// RebalanceRate caps the bytes per second a shard sends to others when
	// the shard count changes; 0 means no cap.
	RebalanceRate int64
	PeerCAFile    string

	// Engine settings. Only those given explicitly are applied: the rest
	// keep the values stored in the cache (or python-diskcache's defaults
	// for a new cache), so settings changed at run time survive restarts.
	SizeLimit       int64
	EvictionPolicy  string
	CullLimit       int64
	Statistics      bool
	TagIndex        bool
	DiskMinFileSize int64

	// Warnings are problems LoadConfig tolerated, for the caller to log.
	Warnings []string

	explicit map[string]bool
}

// DefaultPageSize is --page-size's default: half python-diskcache's
// (SQLite's) 4096. A write appends every page it changes to the log whole,
// and the cacheserver's writes are mostly small sets changing a few pages
// each. Measured on 2 CPUs (docs/benchmarks.md): a SET of 100 bytes at 64
// connections makes 43% fewer bytes of disk writes, and over frames serves
// a median 9% more per second; gets and the Django workload within the
// noise.
const DefaultPageSize = 2048

// DefaultConfig returns the defaults of every flag.
func DefaultConfig() Config {
	return Config{
		Listen:                ":8080",
		Fanout:                8,
		DatabaseTimeout:       time.Second,
		MaxKeyBytes:           64 << 10,
		MaxValueBytes:         1 << 40,
		RequestTimeout:        30 * time.Second,
		ShutdownTimeout:       25 * time.Second,
		BodyTimeout:           30 * time.Second,
		DiskReserveBytes:      16 << 20,
		CollectionIdleTimeout: time.Minute,
		MaxOpenCollections:    256,
		MetricsInterval:       time.Second,
		RebalanceRate:         64 << 20,
		LogFormat:             "json",
		ShardIndex:            -1,
		Epoch:                 1,
		SizeLimit:             1 << 30,
		EvictionPolicy:        string(settings.PolicyLeastRecentlyStored),
		CullLimit:             10,
		DiskMinFileSize:       1 << 15,
		HotValueBytes:         32 << 20,
		PageSize:              DefaultPageSize,
	}
}

// EngineSettings returns the engine settings given explicitly.
func (c *Config) EngineSettings() settings.Settings {
	var out settings.Settings
	given := func(n settings.Name) bool { return c.explicit[string(n.Flag())] }
	if given(settings.NameSizeLimit) {
		out.SizeLimit = settings.Ptr(c.SizeLimit)
	}
	if given(settings.NameEvictionPolicy) {
		out.EvictionPolicy = settings.Ptr(settings.EvictionPolicy(c.EvictionPolicy))
	}
	if given(settings.NameCullLimit) {
		out.CullLimit = settings.Ptr(c.CullLimit)
	}
	if given(settings.NameStatistics) {
		out.Statistics = settings.Ptr(c.Statistics)
	}
	if given(settings.NameTagIndex) {
		out.TagIndex = settings.Ptr(c.TagIndex)
	}
	if given(settings.NameDiskMinFileSize) {
		out.DiskMinFileSize = settings.Ptr(c.DiskMinFileSize)
	}
	return out
}

// Validate reports the first problem with the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if c.Fanout < 1 || c.Fanout > 999 {
		errs = append(errs, fmt.Errorf("--fanout must be between 1 and 999, got %d", c.Fanout))
	}
	if c.TokenFile == "" && !c.InsecureNoAuth {
		errs = append(errs, errors.New("--token-file is required (or --insecure-no-auth to serve without authentication)"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.MetricsInterval < 0 {
		errs = append(errs, fmt.Errorf("--%s must not be negative", settings.FlagMetricsInterval))
	}
	if c.HotValueBytes < 0 {
		errs = append(errs, fmt.Errorf("--%s must not be negative", settings.FlagHotValueBytes))
	}
	if c.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("--%s must not be negative", settings.FlagMemoryLimit))
	}
	if !engine.ValidPageSize(c.PageSize) {
		errs = append(errs, fmt.Errorf("--%s must be a power of two from 512 to 65536, got %d", settings.FlagPageSize, c.PageSize))
	}
	if c.RebalanceRate < 0 {
		errs = append(errs, fmt.Errorf("--rebalance-rate must be 0 (no cap) or positive, got %d", c.RebalanceRate))
	}
	if c.MaxKeyBytes < 1 || c.MaxValueBytes < 1 {
		errs = append(errs, errors.New("--max-key-bytes and --max-value-bytes must be positive"))
	}
	if c.MaxKeyBytes > wire.MaxKeyBytesLimit {
		errs = append(errs, fmt.Errorf("--max-key-bytes must be at most %d (a record stream's header line must hold any key), got %d", wire.MaxKeyBytesLimit, c.MaxKeyBytes))
	}
	if !settings.EvictionPolicy(c.EvictionPolicy).Valid() {
		errs = append(errs, fmt.Errorf("--%s %q is not one of %s", settings.NameEvictionPolicy.Flag(), c.EvictionPolicy, settings.PolicyList()))
	}
	if c.SizeLimit < 0 || c.CullLimit < 0 || c.DiskMinFileSize < 0 {
		errs = append(errs, errors.New("--size-limit, --cull-limit and --disk-min-file-size must not be negative"))
	}
	if c.ShardIndex < -1 {
		errs = append(errs, fmt.Errorf("--shard-index must be -1 (standalone) or a shard ordinal, got %d", c.ShardIndex))
	}
	if c.ShardIndex == -1 && (c.Peers != "" || c.TopologyFile != "") {
		errs = append(errs, errors.New("--peers and --topology-file need --shard-index"))
	}
	if c.Epoch < 1 {
		errs = append(errs, fmt.Errorf("--epoch must be at least 1, got %d", c.Epoch))
	}
	if c.BodyTimeout < 0 || c.MaxConnections < 0 || c.DiskReserveBytes < 0 || c.CollectionIdleTimeout < 0 || c.CollectionMaxBytes < 0 || c.MaxOpenCollections < 0 {
		errs = append(errs, errors.New("--body-timeout, --max-connections, --disk-reserve-bytes, --collection-idle-timeout, --collection-max-bytes and --max-open-collections must not be negative"))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format must be json or text, got %q", c.LogFormat))
	}
	return errors.Join(errs...)
}

// LoadConfig parses args (without the program name), the environment and
// the --config file into a Config.
func LoadConfig(args []string, getenv func(string) string) (Config, error) {
	cfg := DefaultConfig()
	cfg.explicit = map[string]bool{}
	fs := flag.NewFlagSet("cacheserver", flag.ContinueOnError)
	var configFile string
	fs.StringVar(&configFile, settings.FlagConfig.String(), "", "`file` of \"name = value\" lines, one per flag")
	fs.StringVar(&cfg.DataDir, settings.FlagDataDir.String(), cfg.DataDir, "cache directory (a FanoutCache: 000, 001, … inside)")
	fs.StringVar(&cfg.Listen, settings.FlagListen.String(), cfg.Listen, "address to serve on")
	fs.IntVar(&cfg.Fanout, settings.FlagFanout.String(), cfg.Fanout, "SQLite databases in the directory (its fanout)")
	fs.DurationVar(&cfg.DatabaseTimeout, settings.FlagDatabaseTimeout.String(), cfg.DatabaseTimeout, "how long a write waits for a busy database before answering 503")
	fs.StringVar(&cfg.TokenFile, settings.FlagTokenFile.String(), cfg.TokenFile, "file holding the bearer token (re-read when it changes); during a rotation the tokens in <file>.next and <file>.previous are accepted too")
	fs.BoolVar(&cfg.InsecureNoAuth, settings.FlagInsecureNoAuth.String(), cfg.InsecureNoAuth, "serve without authentication")
	fs.StringVar(&cfg.TLSCert, settings.FlagTLSCert.String(), cfg.TLSCert, "TLS certificate file")
	fs.StringVar(&cfg.TLSKey, settings.FlagTLSKey.String(), cfg.TLSKey, "TLS key file")
	fs.Int64Var(&cfg.MaxKeyBytes, settings.FlagMaxKeyBytes.String(), cfg.MaxKeyBytes, "largest key accepted")
	fs.Int64Var(&cfg.MaxValueBytes, settings.FlagMaxValueBytes.String(), cfg.MaxValueBytes, "largest value accepted")
	fs.DurationVar(&cfg.RequestTimeout, settings.FlagRequestTimeout.String(), cfg.RequestTimeout, "bound on the database work of one request")
	fs.DurationVar(&cfg.ShutdownTimeout, settings.FlagShutdownTimeout.String(), cfg.ShutdownTimeout, "how long in-flight requests may finish on SIGTERM")
	fs.DurationVar(&cfg.BodyTimeout, settings.FlagBodyTimeout.String(), cfg.BodyTimeout, "longest a request body may go without a byte arriving before the request answers 408 (0: no bound)")
	fs.IntVar(&cfg.MaxConnections, settings.FlagMaxConnections.String(), cfg.MaxConnections, "connections held open at most; more are answered 503 and closed (0: half the file descriptor limit)")
	fs.StringVar(&cfg.HealthListen, settings.FlagHealthListen.String(), cfg.HealthListen, "address serving only /healthz, /readyz and /metrics (same auth, TLS when --tls-cert is given), not counted in --max-connections, for the kubelet's probes and Prometheus (empty: none; they are served on --listen as well)")
	fs.Int64Var(&cfg.DiskReserveBytes, settings.FlagDiskReserveBytes.String(), cfg.DiskReserveBytes, "space held back in the data directory and released when the volume fills, so deletes, clear, evict and cull still work")
	fs.DurationVar(&cfg.CollectionIdleTimeout, settings.FlagCollectionIdleTimeout.String(), cfg.CollectionIdleTimeout, "close the database files of named caches, deques and indexes unused this long (0: keep them open)")
	fs.IntVar(&cfg.MaxOpenCollections, settings.FlagMaxOpenCollections.String(), cfg.MaxOpenCollections, "named caches, deques and indexes that keep their database files open (about 180 KiB of memory and 3 file descriptors each); using one more closes those of the one used least recently (0: no bound)")
	fs.Int64Var(&cfg.CollectionMaxBytes, settings.FlagCollectionMaxBytes.String(), cfg.CollectionMaxBytes, "bytes each deque, index or non-culling named cache may hold; writes beyond answer 507 (0: one fanout database's share of --size-limit)")
	fs.BoolVar(&cfg.FsyncValueFiles, settings.FlagFsyncValueFiles.String(), cfg.FsyncValueFiles, "fsync each new value file before its row commits, so a power loss cannot leave a committed item without its value (python-diskcache does not; costs a disk flush per file-backed write)")
	fs.Int64Var(&cfg.HotValueBytes, settings.FlagHotValueBytes.String(), cfg.HotValueBytes, "bytes of the values read last kept in memory, so gets they answer run no SQL (0: none); values in files are not kept. Not 0: no other process may open the data directory's databases while the server runs")
	fs.IntVar(&cfg.PageSize, settings.FlagPageSize.String(), cfg.PageSize, "SQLite page size in bytes of the databases the server creates (those that exist keep theirs): a write appends each page it changes to the log whole, so smaller pages write less per small set; python-diskcache's default is 4096")
	fs.Int64Var(&cfg.MemoryLimit, settings.FlagMemoryLimit.String(), cfg.MemoryLimit, fmt.Sprintf("bytes of memory the container may use (the operator passes its memory limit; 0: unknown): the server sets the Go runtime's soft memory limit to this less the SQLite page caches of the fanout databases and %d MiB for thread stacks and SQLite's other memory, but at least --hot-value-bytes + %d MiB, so the garbage collector works harder before the container's limit is reached. GOMEMLIMIT in the environment wins", settings.MemoryOutsideGo>>20, settings.MemoryGoBaseline>>20))
	fs.BoolVar(&cfg.MetricsRequireToken, settings.FlagMetricsRequireToken.String(), cfg.MetricsRequireToken, "serve /metrics only with the bearer token (the data token, or the admin token)")
	fs.DurationVar(&cfg.MetricsInterval, settings.FlagMetricsInterval.String(), cfg.MetricsInterval, "least time between two renderings of /metrics: a scrape waits for the first rendering that starts after it arrives, and scrapes waiting together share it (0: no bound)")
	fs.StringVar(&cfg.LogFormat, settings.FlagLogFormat.String(), cfg.LogFormat, "json or text")
	fs.IntVar(&cfg.ShardIndex, settings.FlagShardIndex.String(), cfg.ShardIndex, "this server's shard (StatefulSet ordinal); -1 serves alone and routes nothing")
	fs.StringVar(&cfg.Peers, settings.FlagPeers.String(), cfg.Peers, "base URLs of every shard, in order, comma-separated (the initial topology)")
	fs.Int64Var(&cfg.Epoch, settings.FlagEpoch.String(), cfg.Epoch, "epoch of the --peers topology")
	fs.StringVar(&cfg.TopologyFile, settings.FlagTopologyFile.String(), cfg.TopologyFile, `file holding {"epoch","shards","previous"} (a mounted ConfigMap; re-read when it changes)`)
	fs.StringVar(&cfg.AdminTokenFile, settings.FlagAdminTokenFile.String(), cfg.AdminTokenFile, "file holding the operator's token, the only one allowed to change the topology")
	fs.Int64Var(&cfg.RebalanceRate, settings.FlagRebalanceRate.String(), cfg.RebalanceRate, "bytes per second this shard sends to the others while the shard count changes (0: no cap)")
	fs.StringVar(&cfg.PeerCAFile, settings.FlagPeerCAFile.String(), cfg.PeerCAFile, "CA certificates that verify peers when forwarding over https (default: the system's)")
	fs.Int64Var(&cfg.SizeLimit, settings.NameSizeLimit.Flag().String(), cfg.SizeLimit, "bytes the cache may use before culling (split across the --fanout databases)")
	fs.StringVar(&cfg.EvictionPolicy, settings.NameEvictionPolicy.Flag().String(), cfg.EvictionPolicy, settings.PolicyList())
	fs.Int64Var(&cfg.CullLimit, settings.NameCullLimit.Flag().String(), cfg.CullLimit, "items culled at most per write (0 disables culling on write)")
	fs.BoolVar(&cfg.Statistics, settings.NameStatistics.Flag().String(), cfg.Statistics, "count hits and misses")
	fs.BoolVar(&cfg.TagIndex, settings.NameTagIndex.Flag().String(), cfg.TagIndex, "index tags for fast evict")
	fs.Int64Var(&cfg.DiskMinFileSize, settings.NameDiskMinFileSize.Flag().String(), cfg.DiskMinFileSize, "values at least this large go to files")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	// Lower layers first: the file, then the environment; flags on the
	// command line are already set and are not overwritten.
	layers := []map[string]string{}
	if configFile == "" {
		configFile = getenv(settings.FlagConfig.Env())
	}
	if configFile != "" {
		file, err := readConfigFile(configFile)
		if err != nil {
			return cfg, err
		}
		layers = append(layers, file)
	}
	env := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(settings.Flag(f.Name).Env()); v != "" {
			env[f.Name] = v
		}
	})
	layers = append(layers, env)
	for _, layer := range layers {
		names := make([]string, 0, len(layer))
		for n := range layer {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			if name == settings.FlagConfig.String() || given[name] {
				continue
			}
			f := fs.Lookup(name)
			if f == nil {
				// A newer operator may write settings an older server does
				// not know; refusing to start would crash-loop its pods.
				cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("config: ignoring unknown setting %q", name))
				continue
			}
			if err := f.Value.Set(layer[name]); err != nil {
				return cfg, fmt.Errorf("config: %s = %q: %w", name, layer[name], err)
			}
			cfg.explicit[name] = true
		}
	}
	for n := range given {
		cfg.explicit[n] = true
	}
	if err := cfg.Validate(); err != nil {
		if len(cfg.Warnings) > 0 {
			// A misspelt name is the likeliest cause: say so here, since
			// the warnings are logged only once the config loaded.
			err = fmt.Errorf("%w\n%s", err, strings.Join(cfg.Warnings, "\n"))
		}
		return cfg, err
	}
	return cfg, nil
}

// readConfigFile reads "name = value" lines; '#' starts a comment.
func readConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("config: %s:%d: want name = value, got %q", path, line, text)
		}
		out[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(value), `"`)
	}
	return out, sc.Err()
}

// tokenSource holds the bearer tokens a server accepts, re-reading their
// files when they change so a rotated Secret takes effect without a
// restart. The token is in the file; during a rotation the files beside it
// with the suffixes wire.TokenNextSuffix and wire.TokenPreviousSuffix
// (token.next and token.previous of a mounted Secret) hold the token
// coming in and the one going out, and are accepted too.
type tokenSource struct {
	paths []string // the file, then its optional siblings
	log   *slog.Logger

	mu      sync.Mutex
	values  []string // accepted tokens, the file's first
	stamp   string   // of the files last read
	checked time.Time
	failing bool // the files could not be read at the last check
}

// errEmptyTokenFile: the token file is empty (being written, or emptied).
var errEmptyTokenFile = errors.New("the token file is empty")

func newTokenSource(path string, log *slog.Logger) (*tokenSource, error) {
	t := &tokenSource{paths: []string{path, path + wire.TokenNextSuffix, path + wire.TokenPreviousSuffix}, log: log}
	if err := t.reload(); err != nil && !errors.Is(err, errEmptyTokenFile) {
		return nil, err
	}
	if len(t.values) == 0 {
		return nil, fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}

// reload reads the files again when one of them appeared, went or changed.
func (t *tokenSource) reload() error {
	var stamp strings.Builder
	for i, p := range t.paths {
		st, err := os.Stat(p)
		switch {
		case err == nil:
			fmt.Fprintf(&stamp, "%d:%d:%d;", i, st.ModTime().UnixNano(), st.Size())
		case i == 0 || !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("token file: %w", err)
		}
	}
	if stamp.String() == t.stamp && len(t.values) > 0 {
		return nil
	}
	var values []string
	for i, p := range t.paths {
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
		case i > 0 && errors.Is(err, fs.ErrNotExist):
			continue
		default:
			return fmt.Errorf("token file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			if i == 0 {
				return errEmptyTokenFile // being written: keep the last good set
			}
			continue
		}
		if !slices.Contains(values, v) {
			values = append(values, v)
		}
	}
	t.values, t.stamp = values, stamp.String()
	return nil
}

// tokens returns the accepted tokens, the file's first, checking the files
// at most once a second.
func (t *tokenSource) tokens() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) > time.Second {
		t.checked = now
		// The last good tokens stay accepted while the files cannot be
		// read: a mounted Secret is briefly gone while the kubelet swaps
		// it. Said once, so that one that stays gone is seen.
		switch err := t.reload(); {
		case err != nil && !t.failing:
			t.failing = true
			t.log.Warn("cannot read the token file; the tokens read last are accepted until it can be read again",
				slog.String("file", t.paths[0]), slog.Any("error", err))
		case err == nil && t.failing:
			t.failing = false
			t.log.Info("the token file can be read again", slog.String("file", t.paths[0]))
		}
	}
	return t.values
}

// token returns the token of the file itself (the one to send).
func (t *tokenSource) token() string {
	if v := t.tokens(); len(v) > 0 {
		return v[0]
	}
	return ""
}

// accepts reports whether got is one of the accepted tokens, in constant
// time for each.
func (t *tokenSource) accepts(got string) bool {
	ok := 0
	for _, want := range t.tokens() {
		ok |= subtle.ConstantTimeCompare([]byte(got), []byte(want))
	}
	return got != "" && ok == 1
}

// fingerprints are wire.TokenFingerprint of the accepted tokens.
func (t *tokenSource) fingerprints() []string {
	v := t.tokens()
	out := make([]string, len(v))
	for i, tok := range v {
		out[i] = wire.TokenFingerprint(tok)
	}
	return out
}

// certReloader serves the TLS certificate of a key pair on disk and loads
// it again when the files change (a renewed cert-manager Secret), checking
// at most once a second.
type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) reload() error {
	st, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if r.cert != nil && st.ModTime().Equal(r.modTime) {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	r.cert, r.modTime = &cert, st.ModTime()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) > time.Second {
		r.checked = now
		_ = r.reload() // keep serving the last good pair while files are being replaced
	}
	return r.cert, nil
}

// parseBool reads a query flag: 1, t, true, yes, on and 0, f, false, no,
// off, in any case.
func parseBool(s string, def bool) (bool, error) {
	if s == "" {
		return def, nil
	}
	switch strings.ToLower(s) {
	case "1", "t", "true", "yes", "on":
		return true, nil
	case "0", "f", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("not a boolean")
}

// valueFileSync is the engine's SyncFile for this configuration.
func (c *Config) valueFileSync() func(*os.File) error {
	switch {
	case !c.FsyncValueFiles:
		return nil
	case c.syncFile != nil:
		return c.syncFile
	default:
		return (*os.File).Sync
	}
}
