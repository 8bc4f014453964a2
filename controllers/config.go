package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// LiveSettings are the engine settings a running cacheserver changes
// through PATCH /v1/settings, keyed by engine setting name with the JSON
// values the server answers with (numbers as float64 after decoding).
type LiveSettings struct {
	SizeLimit      int64
	EvictionPolicy string
	CullLimit      int64
	Statistics     bool
	TagIndex       bool
}

// liveSettings reads the live settings of a defaulted spec.
func liveSettings(spec *cachev1alpha1.DiskCacheSpec) LiveSettings {
	return LiveSettings{
		SizeLimit:      spec.SizeLimit.Value(),
		EvictionPolicy: string(spec.EvictionPolicy),
		CullLimit:      int64(*spec.CullLimit),
		Statistics:     spec.Statistics,
		TagIndex:       spec.TagIndex,
	}
}

// Map is the body of PATCH /v1/settings.
func (l LiveSettings) Map() map[string]any {
	return map[string]any{
		"size_limit":      l.SizeLimit,
		"eviction_policy": l.EvictionPolicy,
		"cull_limit":      l.CullLimit,
		"statistics":      l.Statistics,
		"tag_index":       l.TagIndex,
	}
}

// Diff returns the settings of l that differ from what a server reports
// (GET /v1/settings), as a PATCH body; empty when nothing differs.
func (l LiveSettings) Diff(current map[string]any) map[string]any {
	out := map[string]any{}
	for name, want := range l.Map() {
		if !settingEqual(want, current[name]) {
			out[name] = want
		}
	}
	return out
}

func settingEqual(want, got any) bool {
	switch w := want.(type) {
	case int64:
		switch g := got.(type) {
		case float64:
			return float64(w) == g
		case int64:
			return w == g
		case int:
			return w == int64(g)
		}
		return false
	case bool:
		switch g := got.(type) {
		case bool:
			return w == g
		case float64: // servers that report 0/1
			return w == (g != 0)
		}
		return false
	case string:
		g, ok := got.(string)
		return ok && w == g
	}
	return false
}

// serverConfig renders cacheserver.conf for a defaulted DiskCache. restart
// holds the settings read only at start-up; live the ones the operator
// applies to running servers. Only restart goes into the pod template hash.
func serverConfig(dc *cachev1alpha1.DiskCache) (conf string, restartPart string) {
	spec := &dc.Spec
	var r strings.Builder
	line := func(b *strings.Builder, name, value string) { fmt.Fprintf(b, "%s = %s\n", name, value) }
	line(&r, "data-dir", DataDir)
	line(&r, "listen", ":"+strconv.Itoa(Port))
	line(&r, "token-file", TokenPath)
	line(&r, "fanout", strconv.Itoa(int(spec.Fanout)))
	line(&r, "database-timeout", spec.DatabaseTimeout.Duration.String())
	line(&r, "disk-min-file-size", strconv.FormatInt(spec.DiskMinFileSize.Value(), 10))
	if spec.MaxKeyBytes != nil {
		line(&r, "max-key-bytes", strconv.FormatInt(spec.MaxKeyBytes.Value(), 10))
	}
	if spec.MaxValueBytes != nil {
		line(&r, "max-value-bytes", strconv.FormatInt(spec.MaxValueBytes.Value(), 10))
	}
	if scheme(dc) == "https" {
		line(&r, "tls-cert", TLSDir+"/tls.crt")
		line(&r, "tls-key", TLSDir+"/tls.key")
	}
	line(&r, "log-format", "json")

	live := liveSettings(spec)
	var l strings.Builder
	line(&l, "size-limit", strconv.FormatInt(live.SizeLimit, 10))
	line(&l, "eviction-policy", live.EvictionPolicy)
	line(&l, "cull-limit", strconv.FormatInt(live.CullLimit, 10))
	line(&l, "statistics", strconv.FormatBool(live.Statistics))
	line(&l, "tag-index", strconv.FormatBool(live.TagIndex))

	var b strings.Builder
	fmt.Fprintf(&b, "# cacheserver configuration of DiskCache %s/%s, written by %s.\n", dc.Namespace, dc.Name, ManagerName)
	b.WriteString("# Edit the DiskCache, not this file: the operator overwrites it.\n\n")
	b.WriteString("# Read at start-up: a change rolls the pods.\n")
	b.WriteString(r.String())
	b.WriteString("\n# Live settings: the operator applies a change to running pods\n")
	b.WriteString("# (PATCH /v1/settings); this file keeps them across restarts.\n")
	b.WriteString(l.String())
	return b.String(), r.String()
}

// hash is a short hex SHA-256.
func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
