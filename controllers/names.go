package controllers

import (
	"fmt"
	"sort"
	"strings"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// Fixed facts of the cache pods.
const (
	// ManagerName is the field manager, event reporter and managed-by label value.
	ManagerName = "diskcache-operator"

	ContainerName = "cacheserver"
	PortName      = "http"
	Port          = 8080
	// HealthPortName and HealthPort are the server's health port
	// (--health-listen): /healthz, /readyz and /metrics outside
	// --max-connections, for the kubelet's probes and Prometheus.
	HealthPortName = "health"
	HealthPort     = 8081
	DataVolume     = "data"
	DataMountPath  = "/data"
	DataDir        = "/data/cache"
	ConfigVolume   = "config"
	ConfigDir      = "/etc/diskcache"
	ConfigKey      = "cacheserver.conf"
	ConfigPath     = ConfigDir + "/" + ConfigKey
	TokenVolume    = "token"
	TokenDir       = "/var/run/secrets/diskcache"
	TokenPath      = TokenDir + "/" + cachev1alpha1.TokenKey
	TLSVolume      = "tls"
	TLSDir         = "/etc/diskcache-tls"
	TmpVolume      = "tmp"
	RunAsID        = int64(65532)
	BinaryPath     = "/cacheserver"
	tokenBytes     = 32
	labelPrefix    = "cache.diskcache.dev/"
	ConfigHashAnno = labelPrefix + "config-hash"
	AppliedHash    = labelPrefix + "applied-hash"
)

// The topology: the <name>-topology ConfigMap and the admin token are
// projected into the config volume next to cacheserver.conf, and each
// cacheserver learns its shard index from its pod's ordinal.
const (
	TopologyKey    = "topology.json"
	TopologyDir    = ConfigDir + "/topology"
	TopologyPath   = TopologyDir + "/" + TopologyKey
	AdminTokenDir  = ConfigDir + "/admin"
	AdminTokenPath = AdminTokenDir + "/" + cachev1alpha1.TokenKey
	caKey          = "ca.crt"
	PodIndexLabel  = "apps.kubernetes.io/pod-index"
	// DefaultClusterDomain is the DNS domain of the cluster's Services.
	DefaultClusterDomain = "cluster.local"
)

// Well-known labels (app.kubernetes.io/*).
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPartOf    = "app.kubernetes.io/part-of"

	AppName            = "diskcache"
	ComponentServer    = "cacheserver"
	ComponentConfig    = "config"
	ComponentAuth      = "auth"
	ComponentAdminAuth = "admin-auth"
	ComponentTopology  = "topology"
	ComponentPeers     = "peers"
	ComponentClientSvc = "client"
)

// Names of the children of a DiskCache.
func stsName(dc *cachev1alpha1.DiskCache) string       { return dc.Name }
func clientSvcName(dc *cachev1alpha1.DiskCache) string { return dc.Name }
func peerSvcName(dc *cachev1alpha1.DiskCache) string   { return dc.Name + "-peers" }
func configMapName(dc *cachev1alpha1.DiskCache) string { return dc.Name + "-config" }
func pdbName(dc *cachev1alpha1.DiskCache) string       { return dc.Name }
func topologyName(dc *cachev1alpha1.DiskCache) string  { return dc.Name + "-topology" }

// adminSecretName is the Secret with the operator's own token, which only
// the operator uses (to change the servers' topology).
func adminSecretName(dc *cachev1alpha1.DiskCache) string { return dc.Name + "-admin-token" }

// generatedSecretName is the Secret the operator creates when spec.auth is empty.
func generatedSecretName(dc *cachev1alpha1.DiskCache) string { return dc.Name + "-token" }

// selectorLabels select the cache pods of one DiskCache.
func selectorLabels(dc *cachev1alpha1.DiskCache) map[string]string {
	return map[string]string{
		LabelName:      AppName,
		LabelInstance:  dc.Name,
		LabelComponent: ComponentServer,
	}
}

// labels are put on every child; component says which.
func labels(dc *cachev1alpha1.DiskCache, component string) map[string]string {
	return map[string]string{
		LabelName:      AppName,
		LabelInstance:  dc.Name,
		LabelComponent: component,
		LabelManagedBy: ManagerName,
	}
}

// selectorString is selectorLabels as a label selector string, sorted.
func selectorString(dc *cachev1alpha1.DiskCache) string {
	sel := selectorLabels(dc)
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// scheme is http or https.
func scheme(dc *cachev1alpha1.DiskCache) string {
	if dc.Spec.TLS != nil && dc.Spec.TLS.SecretName != "" {
		return "https"
	}
	return "http"
}

// endpoint is the client Service URL.
func endpoint(dc *cachev1alpha1.DiskCache) string {
	return fmt.Sprintf("%s://%s.%s.svc:%d", scheme(dc), clientSvcName(dc), dc.Namespace, Port)
}

// podHost is the stable DNS name of shard i through the headless Service.
func podHost(dc *cachev1alpha1.DiskCache, podName string) string {
	return fmt.Sprintf("%s.%s.%s.svc", podName, peerSvcName(dc), dc.Namespace)
}
