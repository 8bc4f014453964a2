package settings

import "strings"

// Flag is a cacheserver flag and the key of the same setting in its
// --config file ("name = value" lines). The engine settings' flags come from
// Name.Flag; these are the server's own.
type Flag string

// The cacheserver's own flags.
const (
	FlagConfig                Flag = "config"
	FlagDataDir               Flag = "data-dir"
	FlagListen                Flag = "listen"
	FlagFanout                Flag = "fanout"
	FlagDatabaseTimeout       Flag = "database-timeout"
	FlagTokenFile             Flag = "token-file"
	FlagInsecureNoAuth        Flag = "insecure-no-auth"
	FlagTLSCert               Flag = "tls-cert"
	FlagTLSKey                Flag = "tls-key"
	FlagMaxKeyBytes           Flag = "max-key-bytes"
	FlagMaxValueBytes         Flag = "max-value-bytes"
	FlagRequestTimeout        Flag = "request-timeout"
	FlagShutdownTimeout       Flag = "shutdown-timeout"
	FlagLogFormat             Flag = "log-format"
	FlagShardIndex            Flag = "shard-index"
	FlagPeers                 Flag = "peers"
	FlagEpoch                 Flag = "epoch"
	FlagTopologyFile          Flag = "topology-file"
	FlagAdminTokenFile        Flag = "admin-token-file"
	FlagPeerCAFile            Flag = "peer-ca-file"
	FlagBodyTimeout           Flag = "body-timeout"
	FlagMaxConnections        Flag = "max-connections"
	FlagHealthListen          Flag = "health-listen"
	FlagDiskReserveBytes      Flag = "disk-reserve-bytes"
	FlagCollectionIdleTimeout Flag = "collection-idle-timeout"
	FlagCollectionMaxBytes    Flag = "collection-max-bytes"
	FlagMaxOpenCollections    Flag = "max-open-collections"
	FlagRebalanceRate         Flag = "rebalance-rate"
	FlagFsyncValueFiles       Flag = "fsync-value-files"
	FlagMetricsRequireToken   Flag = "metrics-require-token"
	FlagMetricsInterval       Flag = "metrics-interval"
	FlagHotValueBytes         Flag = "hot-value-bytes"
	FlagPageSize              Flag = "page-size"
	FlagMemoryLimit           Flag = "memory-limit"
)

// ServerFlags are the engine settings the cacheserver takes as flags (and
// config-file keys): the live settings and disk_min_file_size, which is
// read at start-up.
func ServerFlags() []Name { return append(Live(), NameDiskMinFileSize) }

// String returns the flag's name.
func (f Flag) String() string { return string(f) }

// Arg is the flag on a command line: --data-dir.
func (f Flag) Arg() string { return "--" + string(f) }

// Env is the environment variable that sets the flag: DISKCACHE_DATA_DIR.
func (f Flag) Env() string {
	return "DISKCACHE_" + strings.ToUpper(strings.ReplaceAll(string(f), "-", "_"))
}
