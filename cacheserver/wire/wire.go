// Package wire is the cacheserver's HTTP wire format, shared by the server
// and the Go client: header and parameter names, how keys, tags and values
// are written in URLs, headers and bodies, the JSON error body, and the
// record stream that batch requests use.
package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// Headers carrying item metadata on single-key requests and responses.
const (
	HeaderValueType  = "Diskcache-Value-Type"  // bytes, text, int, float, pickle
	HeaderExpireTime = "Diskcache-Expire-Time" // absolute, epoch seconds
	HeaderTag        = "Diskcache-Tag"         // percent-encoded
	HeaderTagType    = "Diskcache-Tag-Type"    // text, bytes, int, float
	HeaderKey        = "Diskcache-Key"         // percent-encoded (queue and index results)
	HeaderKeyType    = "Diskcache-Key-Type"
	HeaderShard      = "Diskcache-Shard" // shard that answered
	// HeaderTotal is the length of a deque whose items a listing answers.
	HeaderTotal = "Diskcache-Total"
	// HeaderNextCursor is the opaque cursor of the next page of an index
	// listing; absent on the last page.
	HeaderNextCursor = "Diskcache-Next-Cursor"
)

// Headers of routing between shards (see docs/operations.md).
const (
	// HeaderEpoch, on every response of a shard that has a topology, is
	// the epoch it routes by; a client that knows an older one refreshes.
	HeaderEpoch = "Diskcache-Epoch"
	// HeaderForwardedEpoch marks a request one shard sends another: the
	// sender's epoch. The receiver never forwards it again.
	HeaderForwardedEpoch = "Diskcache-Forwarded-Epoch"
	// HeaderFailedKeys, on a batch get through a shard of several, counts
	// the keys whose owner failed its part: their records have found
	// false and an error.
	HeaderFailedKeys = "Diskcache-Failed-Keys"
	// HeaderNoRoute marks the 404 of a path the server has no route for,
	// so that a HEAD answer (which has no body) is not taken for a miss.
	HeaderNoRoute = "Diskcache-No-Route"
	// HeaderForwardedBy is the base URL of the shard that forwarded.
	HeaderForwardedBy = "Diskcache-Forwarded-By"
	// HeaderScope "shard" asks a shard to answer a cluster-wide operation
	// for itself only (the sub-requests of a fan-out).
	HeaderScope = "Diskcache-Scope"
	// HeaderError, on every error answer, is its error code, as in the
	// body: the answer to a HEAD has no body.
	HeaderError = "Diskcache-Error"
)

// Query parameters.
const (
	ParamKeyType = "kt" // kind of the path key; default text
	// ParamKeyEncoding says how the {key} path segment is written: percent
	// (the default: the key itself, percent-encoded) or base64 (unpadded
	// base64url of the key's bytes, "=" for the empty key). HTTP routing
	// cannot carry the keys "" and "/" percent-encoded; clients send those,
	// or any key, in base64.
	ParamKeyEncoding = "ke"
	ParamExpire      = "expire" // seconds from now, may be fractional or negative
	ParamTag         = "tag"
	ParamTagType     = "tt" // kind of tag; default text
)

// RecordsContentType is the media type of record streams (batch bodies).
const RecordsContentType = "application/x-diskcache-records"

// Error is the JSON body of every error response.
type Error struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

// Error codes about the connection and the request body.
const (
	// CodeBodyTimeout answers a request whose body stalled longer than the
	// server's --body-timeout (408, then the connection is closed).
	CodeBodyTimeout = "body_timeout"
	// CodeTooManyConnections answers a connection beyond the server's
	// --max-connections (503, then the connection is closed).
	CodeTooManyConnections = "too_many_connections"
	// CodeInsufficientStorage answers a write the data volume has no space
	// for (507).
	CodeInsufficientStorage = "insufficient_storage"
	// CodeCollectionFull answers a write to a deque, index or non-culling
	// named cache at its --collection-max-bytes (507).
	CodeCollectionFull = "collection_full"
	// CodeUpgradeRequired answers GET /v1/frames without the Upgrade
	// headers of the frames transport (426).
	CodeUpgradeRequired = "upgrade_required"
)

// Error codes.
const (
	CodeBadRequest     = "bad_request"
	CodeBadKey         = "bad_key"
	CodeKeyTooLarge    = "key_too_large"
	CodeTagTooLarge    = "tag_too_large"
	CodeBadValue       = "bad_value"
	CodeValueTooLarge  = "value_too_large"
	CodeBadName        = "bad_name"
	CodeBadSetting     = "bad_setting"
	CodeNotFound       = "not_found"
	CodeNotNumeric     = "not_numeric"
	CodeOverflow       = "overflow"
	CodeEmpty          = "empty"
	CodeQueueFull      = "queue_full"
	CodeNotOwner       = "not_owner"
	CodeWrongType      = "wrong_type"
	CodeUnauthorized   = "unauthorized"
	CodeTimeout        = "timeout"
	CodeUnavailable    = "unavailable"
	CodeInternal       = "internal"
	CodeMethodNotAllow = "method_not_allowed"
	CodeRateLimited    = "rate_limited"
	// CodeIndexOutOfRange answers a deque index outside the deque.
	CodeIndexOutOfRange = "index_out_of_range"

	// Routing between shards.
	CodeNoTopology       = "no_topology"       // 503 (404 on GET /v1/topology of a standalone server)
	CodeWrongEpoch       = "wrong_epoch"       // 409: the receiver routes by another epoch; body has "topology"
	CodeTopologyConflict = "topology_conflict" // 409: an older or conflicting announcement; body has "topology"
	CodeBadTopology      = "bad_topology"      // 400
	CodeShardUnavailable = "shard_unavailable" // 503: the owner could not be reached; body has "shard" and "url"
	// CodeShardTimeout (504): the owner took the request but did not answer
	// within the request timeout, so it may have been applied there (a
	// retry of an incr could count twice); body has "shard" and "url".
	CodeShardTimeout    = "shard_timeout"
	CodePartialFailure  = "partial_failure"  // 502: some shards of a cluster-wide operation failed; body has "shards"
	CodeForbidden       = "forbidden"        // 403: the data token cannot change the topology
	CodeAdminDisabled   = "admin_disabled"   // 403: the server has no --admin-token-file
	CodeRebalancePaused = "rebalance_paused" // 409: moves are paused for a cluster-wide deletion; the sender retries
	// CodeListingRestart (409): a key listing's cursor is from a topology
	// epoch the cache no longer routes by; list again from the start (the
	// clients do so by themselves).
	CodeListingRestart = "listing_restart"
)

// Routing returns the bytes that decide which shard owns k (see package
// topology): the key's wire bytes, except that floats route by value.
func Routing(k kv.Key) []byte {
	switch k.Kind() {
	case kv.KeyInt:
		return topology.IntRouting(k.Int())
	case kv.KeyFloat:
		return topology.FloatRouting(k.Float())
	case kv.KeyText:
		return []byte(k.Text())
	}
	return k.Bytes()
}

// DecodeKeySegment returns the key text of a {key} path segment (already
// percent-decoded) written in the given ParamKeyEncoding.
func DecodeKeySegment(segment, encoding string) (string, error) {
	switch encoding {
	case "", "percent":
		return segment, nil
	case "base64":
		if segment == "=" {
			return "", nil
		}
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(segment, "="))
		if err != nil {
			return "", fmt.Errorf("key segment is not base64url: %v", err)
		}
		return string(b), nil
	}
	return "", fmt.Errorf("unknown key encoding %q (want percent or base64)", encoding)
}

// EncodeKeySegment writes key text as a {key} path segment (escaped) and
// the ParamKeyEncoding it needs ("" for the default).
func EncodeKeySegment(raw string) (segment, encoding string) {
	if raw == "" || raw == "/" {
		if raw == "" {
			return "=", "base64"
		}
		return base64.RawURLEncoding.EncodeToString([]byte(raw)), "base64"
	}
	if raw == "." || raw == ".." { // dot segments would be resolved away
		return strings.Repeat("%2E", len(raw)), ""
	}
	return url.PathEscape(raw), ""
}

// ParseKey decodes a key given as its (already percent-decoded) text and
// kind name (empty means text). Bytes and pickle keys are the raw bytes of
// the text.
func ParseKey(raw, kind string) (kv.Key, error) {
	switch kind {
	case "", "text":
		if !utf8.ValidString(raw) {
			return kv.Key{}, fmt.Errorf("text key is not valid UTF-8 (use %s=bytes)", ParamKeyType)
		}
		return kv.TextKey(raw), nil
	case "bytes":
		return kv.BytesKey([]byte(raw)), nil
	case "pickle":
		return kv.PickleKey([]byte(raw)), nil
	case "int":
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return kv.Key{}, fmt.Errorf("int key %q is not a 64-bit integer", raw)
		}
		return kv.IntKey(n), nil
	case "float":
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsNaN(f) {
			return kv.Key{}, fmt.Errorf("float key %q is not a number", raw)
		}
		return kv.FloatKey(f), nil
	}
	return kv.Key{}, fmt.Errorf("unknown key type %q (want text, bytes, int, float or pickle)", kind)
}

// FormatKey returns the text and kind name that ParseKey turns back into k.
func FormatKey(k kv.Key) (raw, kind string) {
	switch k.Kind() {
	case kv.KeyInt:
		return strconv.FormatInt(k.Int(), 10), "int"
	case kv.KeyFloat:
		return FormatFloat(k.Float()), "float"
	case kv.KeyBytes:
		return string(k.Bytes()), "bytes"
	case kv.KeyPickle:
		return string(k.Bytes()), "pickle"
	case kv.KeyText:
		return k.Text(), "text"
	}
	return "", ""
}

// FormatFloat writes a float so that Python's float() and Go's ParseFloat
// read back the same number.
func FormatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// MaxTagBytes bounds the tag stored with an item, in bytes of its text
// (the decoded bytes of a bytes tag). Tags come back percent-encoded in a
// response header (up to three times as long), which common HTTP clients
// and proxies refuse beyond a few KiB.
const MaxTagBytes = 1024

// ParseTag decodes a tag; an empty kind means text, and the kind "none"
// means no tag.
func ParseTag(raw, kind string) (kv.Key, error) {
	switch kind {
	case "none":
		return kv.Key{}, nil
	case "pickle":
		return kv.Key{}, fmt.Errorf("a tag cannot be a pickle")
	}
	return ParseKey(raw, kind)
}

// EscapeHeader percent-encodes a key or tag for a header value.
func EscapeHeader(s string) string { return url.PathEscape(s) }

// UnescapeHeader reverses EscapeHeader.
func UnescapeHeader(s string) (string, error) { return url.PathUnescape(s) }

// EscapePath percent-encodes a key or name as one path segment, dots
// included, so "." and ".." stay names rather than becoming relative path
// steps.
func EscapePath(s string) string { return strings.ReplaceAll(url.PathEscape(s), ".", "%2E") }

// ParseNumber reads an int ("12") or, failing that, a float ("1.5",
// "inf") as a Value. An integer written without a point or an exponent
// that leaves the signed 64-bit range is an error wrapping kv.ErrOverflow:
// read as a float it would silently lose digits (Python's ints do not).
func ParseNumber(s string) (kv.Value, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return kv.Int(n), nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return kv.Value{}, fmt.Errorf("%w: %s does not fit in 64 bits", kv.ErrOverflow, s)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return kv.Float(f), nil
	}
	return kv.Value{}, fmt.Errorf("%q is not a number", s)
}

// FormatNumber writes an int or float Value as ParseNumber reads it. Floats
// always carry a '.' or exponent so they read back as floats.
func FormatNumber(v kv.Value) string {
	if v.Type == kv.ValueInt {
		return strconv.FormatInt(v.Int, 10)
	}
	s := FormatFloat(v.Float)
	if !strings.ContainsAny(s, ".eEn") { // "3" → "3.0"; inf/nan contain 'n'
		s += ".0"
	}
	return s
}

// ParseExpire reads the expire parameter: seconds from now.
func ParseExpire(s string) (kv.Expiry, error) {
	if s == "" {
		return kv.Expiry{}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return kv.Expiry{}, fmt.Errorf("expire %q is not a number of seconds", s)
	}
	return kv.ExpireAfterSeconds(f), nil
}

// EncodeKeyJSON is how keys appear in JSON: text keys as strings, other
// kinds with their kind name, bytes and pickles in base64.
type EncodeKeyJSON struct {
	Key  string `json:"key"`
	Kind string `json:"kt,omitempty"` // text when empty
}

// KeyToJSON encodes a key for a JSON body.
func KeyToJSON(k kv.Key) EncodeKeyJSON {
	raw, kind := FormatKey(k)
	switch kind {
	case "text":
		return EncodeKeyJSON{Key: raw}
	case "bytes", "pickle":
		return EncodeKeyJSON{Key: base64.StdEncoding.EncodeToString([]byte(raw)), Kind: kind}
	}
	return EncodeKeyJSON{Key: raw, Kind: kind}
}

// KeyFromJSON decodes a key from a JSON body.
func KeyFromJSON(j EncodeKeyJSON) (kv.Key, error) {
	switch j.Kind {
	case "bytes", "pickle":
		b, err := base64.StdEncoding.DecodeString(j.Key)
		if err != nil {
			return kv.Key{}, fmt.Errorf("%s key is not base64: %v", j.Kind, err)
		}
		return ParseKey(string(b), j.Kind)
	}
	return ParseKey(j.Key, j.Kind)
}

// Token rotation: a server reads its token from --token-file and accepts
// the tokens in the files beside it with these suffixes too (the keys
// token.next and token.previous of a mounted Secret).
const (
	TokenNextSuffix     = ".next"
	TokenPreviousSuffix = ".previous"
)

// TokenFingerprint identifies a token without revealing it: the first 16
// hex digits of its SHA-256. GET /v1/config lists the fingerprints of the
// tokens a server accepts (to the admin token only), so the operator can
// see that every shard accepts a new token before clients get it.
func TokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

// ServerConfig is the answer of GET /v1/config: the start-up configuration
// a server runs with (what only a restart changes), the damaged databases it
// set aside at start, and, to the admin token only, the fingerprints of the
// data tokens it accepts.
type ServerConfig struct {
	Fanout                 int     `json:"fanout"`
	DatabaseTimeoutSeconds float64 `json:"database_timeout_seconds"`
	MaxKeyBytes            int64   `json:"max_key_bytes"`
	MaxValueBytes          int64   `json:"max_value_bytes"`
	RequestTimeoutSeconds  float64 `json:"request_timeout_seconds"`
	TLS                    bool    `json:"tls"`
	// FsyncValueFiles is --fsync-value-files; MetricsRequireToken is
	// --metrics-require-token.
	FsyncValueFiles     bool `json:"fsync_value_files"`
	MetricsRequireToken bool `json:"metrics_require_token"`
	// GoDebug is the GODEBUG the server's Go runtime runs with: the
	// server adds schedtrace unless GODEBUG sets it (docs/operations.md).
	GoDebug string `json:"go_debug"`
	// PageSize is --page-size, the SQLite page size of a database the
	// server creates; DatabasePageSizes is the one each fanout database
	// runs with, in index order. A database keeps the size it was created
	// with, so a data directory from an older server still shows 4096.
	PageSize          int     `json:"page_size"`
	DatabasePageSizes []int64 `json:"database_page_sizes"`
	// Quarantined lists the fanout databases found damaged at start, moved
	// aside and started empty; their items are lost.
	Quarantined []Quarantined `json:"quarantined"`
	// DiskFull: the data volume is full, so writes of new data are refused
	// (507) until space is freed; reads, deletes and removals still work.
	DiskFull bool `json:"disk_full"`
	// MemoryLimitBytes is --memory-limit, the memory the container may use
	// (0: not given); GoMemoryLimitBytes is the soft memory limit the Go
	// runtime runs with (0: none): from --memory-limit less what lives
	// outside the Go heap, or GOMEMLIMIT when the environment sets it.
	MemoryLimitBytes   int64 `json:"memory_limit_bytes"`
	GoMemoryLimitBytes int64 `json:"go_memory_limit_bytes"`
	// TokenFingerprints are TokenFingerprint of each accepted data token
	// (current first); absent unless the request carried the admin token.
	TokenFingerprints []string `json:"token_fingerprints,omitempty"`
}

// Quarantined is one fanout database set aside at start.
type Quarantined struct {
	Database int    `json:"database"`
	MovedTo  string `json:"moved_to"`
	Error    string `json:"error"`
}

// Usage is the body of GET /v1/usage: one shard's own figures, which the
// operator's autoscaler reads on an interval (rates are the difference of
// two readings over the time between them). Counters start at zero when
// the server starts; Started tells a restart apart from a quiet interval.
type Usage struct {
	// Started is when this server process started (RFC 3339).
	Started string `json:"started"`
	// Shard is this server's shard index, -1 when it runs alone.
	Shard int `json:"shard"`
	// ServedRequests counts data requests this shard answered as their
	// owner (or its part of a cluster-wide operation), never the requests
	// it forwarded to another shard: diskcache_served_requests_total.
	ServedRequests int64 `json:"served_requests"`
	// EvictedItems counts items the eviction policy removed (culled) from
	// the shard's cache: diskcache_evicted_total.
	EvictedItems int64 `json:"evicted_items"`
	// ExpiredItems counts items removed because they had expired.
	ExpiredItems int64 `json:"expired_items"`
	// DiskBytes is the whole disk use of the shard: the space allocated to
	// every file of its data directory (fanout databases, value files,
	// write-ahead logs, named caches, deques, indexes), less the full-disk
	// reserve.
	DiskBytes int64 `json:"disk_bytes"`
	// VolumeBytes is python-diskcache's volume() of the shard's cache:
	// database pages plus value files.
	VolumeBytes int64 `json:"volume_bytes"`
	// SizeLimit is the shard's size_limit in bytes.
	SizeLimit int64 `json:"size_limit"`
}
