package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// maxInt64Quantity is the largest quantity a server setting can take.
var maxInt64Quantity = resource.NewQuantity(math.MaxInt64, resource.DecimalSI)

// bytesOf is a byte count of the spec as the servers take it: past int64,
// the largest one (Quantity.Value gives 0 for "1e19", which the server
// refuses or, as a size limit, would cull everything to).
func bytesOf(q *resource.Quantity) int64 {
	if q.Cmp(*maxInt64Quantity) >= 0 {
		return math.MaxInt64
	}
	return q.Value()
}

// liveSettings are the live settings of a defaulted spec: what the
// operator applies to running servers (PATCH /v1/settings).
func liveSettings(spec *cachev1alpha1.DiskCacheSpec) settings.Settings {
	return settings.Settings{
		SizeLimit:      settings.Ptr(bytesOf(spec.SizeLimit)),
		EvictionPolicy: settings.Ptr(settings.EvictionPolicy(spec.EvictionPolicy)),
		CullLimit:      settings.Ptr(int64(*spec.CullLimit)),
		Statistics:     settings.Ptr(spec.Statistics),
		TagIndex:       settings.Ptr(spec.TagIndex),
	}
}

// serverConfig renders cacheserver.conf for a defaulted DiskCache. restart
// holds the settings read only at start-up; live the ones the operator
// applies to running servers. Only restart goes into the pod template hash.
func serverConfig(dc *cachev1alpha1.DiskCache) (conf string, restartPart string) {
	spec := &dc.Spec
	var r strings.Builder
	line := func(b *strings.Builder, key settings.Flag, value any) { fmt.Fprintf(b, "%s = %v\n", key, value) }
	line(&r, settings.FlagDataDir, DataDir)
	line(&r, settings.FlagListen, ":"+strconv.Itoa(Port))
	line(&r, settings.FlagHealthListen, ":"+strconv.Itoa(HealthPort))
	line(&r, settings.FlagTokenFile, TokenPath)
	line(&r, settings.FlagFanout, spec.Fanout)
	line(&r, settings.FlagDatabaseTimeout, spec.DatabaseTimeout.Duration)
	line(&r, settings.NameDiskMinFileSize.Flag(), bytesOf(spec.DiskMinFileSize))
	if spec.FsyncValueFiles {
		line(&r, settings.FlagFsyncValueFiles, true)
	}
	if spec.HotValueBytes != nil {
		line(&r, settings.FlagHotValueBytes, bytesOf(spec.HotValueBytes))
	}
	if spec.Monitoring.RequireToken {
		line(&r, settings.FlagMetricsRequireToken, true)
	}
	if spec.PageSize != nil {
		line(&r, settings.FlagPageSize, *spec.PageSize)
	}
	if spec.MaxKeyBytes != nil {
		line(&r, settings.FlagMaxKeyBytes, bytesOf(spec.MaxKeyBytes))
	}
	if spec.MaxValueBytes != nil {
		line(&r, settings.FlagMaxValueBytes, bytesOf(spec.MaxValueBytes))
	}
	line(&r, settings.FlagRebalanceRate, bytesOf(spec.Rebalance.Rate))
	if scheme(dc) == "https" {
		line(&r, settings.FlagTLSCert, TLSDir+"/tls.crt")
		line(&r, settings.FlagTLSKey, TLSDir+"/tls.key")
	}
	line(&r, settings.FlagLogFormat, "json")

	var l strings.Builder
	liveSettings(spec).Each(func(n settings.Name, v any) { line(&l, n.Flag(), v) })

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
