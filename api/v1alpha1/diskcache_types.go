package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/diskcache-operator/diskcache-operator/settings"
)

// EvictionPolicy chooses which items a cull removes first (python-diskcache's
// eviction_policy setting). The enum must list settings.Policies(), in that
// order (TestCRDEvictionPolicyEnum checks the generated CRD).
// +kubebuilder:validation:Enum=none;least-recently-stored;least-recently-used;least-frequently-used
type EvictionPolicy string

// The four eviction policies of python-diskcache.
const (
	EvictionNone                = EvictionPolicy(settings.PolicyNone)
	EvictionLeastRecentlyStored = EvictionPolicy(settings.PolicyLeastRecentlyStored)
	EvictionLeastRecentlyUsed   = EvictionPolicy(settings.PolicyLeastRecentlyUsed)
	EvictionLeastFrequentlyUsed = EvictionPolicy(settings.PolicyLeastFrequentlyUsed)
)

// PVCRetentionPolicyType says what happens to a shard's PersistentVolumeClaim.
// +kubebuilder:validation:Enum=Retain;Delete
type PVCRetentionPolicyType string

// Retention choices (the StatefulSet's persistentVolumeClaimRetentionPolicy).
const (
	RetainPVC PVCRetentionPolicyType = "Retain"
	DeletePVC PVCRetentionPolicyType = "Delete"
)

// Defaults, also written into the CRD by the kubebuilder:default markers.
const (
	DefaultShards          int32          = 1
	DefaultSizeLimit                      = "1Gi"
	DefaultEvictionPolicy  EvictionPolicy = EvictionLeastRecentlyStored
	DefaultCullLimit       int32          = 10
	DefaultFanout          int32          = 8
	DefaultDatabaseTimeout                = "1s"
	DefaultDiskMinFileSize                = "32Ki"
	DefaultStorageSize                    = "2Gi"
	DefaultSchedule                       = "*/5 * * * *"
	DefaultTimeZone                       = "UTC"
	DefaultRebalanceRate                  = "64Mi"
	// TokenKey is the key of the bearer token in the auth Secret.
	TokenKey = "token"
	// TokenNextKey and TokenPreviousKey hold, during a rotation, the token
	// coming in and the one going out: the servers accept both besides
	// TokenKey, clients send TokenKey.
	TokenNextKey     = "token.next"
	TokenPreviousKey = "token.previous"
	// RotateTokenAnnotation on a DiskCache starts a token rotation when its
	// value changes (status.auth.lastTrigger is the value last answered):
	//
	//	kubectl annotate dcache/x cache.diskcache.dev/rotate-token="$(date +%s)" --overwrite
	RotateTokenAnnotation = "cache.diskcache.dev/rotate-token"
	// DefaultRotationGracePeriod is how long the previous token stays
	// accepted after a rotation made the new one current.
	DefaultRotationGracePeriod = "5m"
)

// DiskCacheSpec is the desired state of a DiskCache.
//
// Live settings (sizeLimit, evictionPolicy, cullLimit, statistics, tagIndex)
// are applied to running cache servers without a restart; changing any other
// field rolls the shards one at a time.
//
// While autoscaling is enabled, shards must be within its bounds when it is
// set (created or changed). Bounds that no longer hold the count are
// accepted: the autoscaler moves the count into them, as an HPA does. So
// is a created object's 1, which the API server's default gives a manifest
// that leaves shards to the autoscaler: the rule cannot tell it from a 1
// written, and either is moved up to minShards.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || !has(self.shards) || (oldSelf.hasValue() && has(oldSelf.value().shards) && oldSelf.value().shards == self.shards) || (!oldSelf.hasValue() && self.shards == 1) || ((!has(self.autoscaling.minShards) || self.shards >= self.autoscaling.minShards) && (!has(self.autoscaling.maxShards) || self.shards <= self.autoscaling.maxShards))",message="spec.shards must be within [autoscaling.minShards, autoscaling.maxShards] while autoscaling is enabled",optionalOldSelf=true
// +kubebuilder:validation:XValidation:rule="!has(self.sizeLimit) || !has(self.storage) || !has(self.storage.size) || !isQuantity(string(self.sizeLimit)) || !isQuantity(string(self.storage.size)) || quantity(string(self.sizeLimit)).asApproximateFloat() <= quantity(string(self.storage.size)).asApproximateFloat() * 0.9 - double(has(self.fanout) ? self.fanout : 8) * 8388608.0 - 16777216.0",message="sizeLimit must leave headroom on the volume: at most 90% of storage.size less 8Mi per fanout database (write-ahead logs) and 16Mi (the full-disk reserve); see docs/crd.md"
type DiskCacheSpec struct {
	// Shards is the number of cache server pods; keys are spread across them
	// by consistent hashing. Each shard has its own volume.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +optional
	Shards int32 `json:"shards,omitempty"`

	// Image is the cacheserver container image; empty means the image the
	// operator was started with (--cacheserver-image).
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullSecrets of the cache pods, for an image in a private
	// registry: Secrets of type kubernetes.io/dockerconfigjson in the
	// DiskCache's namespace. Empty means the operator's
	// --cacheserver-image-pull-secrets (the Helm chart passes its
	// imagePullSecrets), which must then exist in this namespace too.
	// +listType=atomic
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// ImagePullPolicy of the cacheserver container; empty means Kubernetes'
	// default for the image tag.
	// +kubebuilder:validation:Enum=Always;Never;IfNotPresent
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// SizeLimit is how many bytes of cached data one shard keeps before
	// culling (python-diskcache's size_limit). At most 90% of storage.size
	// less 8Mi per fanout database and 16Mi, for the write-ahead logs and
	// the full-disk reserve. Live.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",message="sizeLimit must be positive"
	// +optional
	SizeLimit *resource.Quantity `json:"sizeLimit,omitempty"`

	// EvictionPolicy chooses which items culling removes first. Live.
	// +kubebuilder:default=least-recently-stored
	// +optional
	EvictionPolicy EvictionPolicy `json:"evictionPolicy,omitempty"`

	// CullLimit is the most items culled by one write; 0 leaves culling to
	// the maintenance schedule. Live.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +optional
	CullLimit *int32 `json:"cullLimit,omitempty"`

	// Statistics turns on hit and miss counting. Live.
	// +optional
	Statistics bool `json:"statistics,omitempty"`

	// TagIndex maintains an index on tags so evicting by tag is fast. Live.
	// +optional
	TagIndex bool `json:"tagIndex,omitempty"`

	// Fanout is the number of SQLite database files per shard (the
	// FanoutCache shard count). Immutable: changing it would re-shard the
	// keys on disk.
	// +kubebuilder:default=8
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="fanout is immutable: changing it would re-shard the keys already on disk"
	// +optional
	Fanout int32 `json:"fanout,omitempty"`

	// DatabaseTimeout is how long a write waits for a busy SQLite file
	// before the server answers 503.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="databaseTimeout must be more than 0: with 0 a write that finds its SQLite file busy would fail at once"
	// +optional
	DatabaseTimeout *metav1.Duration `json:"databaseTimeout,omitempty"`

	// DiskMinFileSize is the smallest value stored in its own file instead
	// of inside SQLite (python-diskcache's disk_min_file_size).
	// +kubebuilder:default="32Ki"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !quantity(string(self)).isLessThan(quantity('0'))",message="diskMinFileSize must not be negative"
	// +optional
	DiskMinFileSize *resource.Quantity `json:"diskMinFileSize,omitempty"`

	// FsyncValueFiles makes each shard fsync every new value file (values
	// of diskMinFileSize bytes or more) and its directory before the item's
	// row commits, so that a power loss or node crash cannot leave a
	// committed item without its value. Off by default, as in
	// python-diskcache: a cache can lose recent items, and the flush
	// costs each file-backed write a disk round trip (docs/operations.md
	// gives the measured cost). A changed value rolls the pods.
	// +optional
	FsyncValueFiles bool `json:"fsyncValueFiles,omitempty"`

	// HotValueBytes is how many bytes of the values read last each shard
	// keeps in memory, so that gets they answer run no SQL (the
	// cacheserver's --hot-value-bytes); values in value files are never
	// kept. Empty means the server's default, 32Mi; 0 keeps none, and lets
	// other processes open the shard's databases while it runs (otherwise
	// it opens them exclusively). Count it in the memory request. A changed
	// value rolls the pods.
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !quantity(string(self)).isLessThan(quantity('0'))",message="hotValueBytes must not be negative"
	// +optional
	HotValueBytes *resource.Quantity `json:"hotValueBytes,omitempty"`

	// PageSize is the SQLite page size, in bytes, of the databases a shard
	// creates (the cacheserver's --page-size). Empty means the server's
	// default, 2048: a write appends every page it changes to the log, so
	// smaller pages write fewer bytes per small set; 4096 is SQLite's and
	// python-diskcache's. Databases that exist keep the page size they
	// were created with, so a change takes effect only for shards and
	// named collections created after it (it rolls the pods).
	// +kubebuilder:validation:Enum=512;1024;2048;4096;8192;16384;32768;65536
	// +optional
	PageSize *int32 `json:"pageSize,omitempty"`

	// MaxKeyBytes is the largest key the server accepts; empty means the
	// server's default (64Ki). At most 128Ki: a record stream's header line
	// must hold any key.
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",message="maxKeyBytes must be positive"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !quantity(string(self)).isGreaterThan(quantity('128Ki'))",message="maxKeyBytes must be at most 128Ki"
	// +optional
	MaxKeyBytes *resource.Quantity `json:"maxKeyBytes,omitempty"`

	// MaxValueBytes is the largest value the server accepts; empty means
	// the server's default (1Ti).
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",message="maxValueBytes must be positive"
	// +optional
	MaxValueBytes *resource.Quantity `json:"maxValueBytes,omitempty"`

	// Storage is each shard's persistent volume.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Maintenance schedules expire and cull on every shard.
	// +kubebuilder:default={}
	// +optional
	Maintenance MaintenanceSpec `json:"maintenance,omitempty"`

	// Auth configures the bearer token clients must send.
	// +kubebuilder:default={}
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// TLS serves HTTPS with the certificate of a kubernetes.io/tls Secret.
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// Monitoring configures /metrics and an optional prometheus-operator
	// ServiceMonitor.
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitempty"`

	// NetworkPolicy, when enabled, makes the operator keep a NetworkPolicy
	// that lets only the selected clients, the operator and the cache's own
	// shards reach the cache pods.
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Resources of the cacheserver container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// NodeSelector of the cache pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the cache pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the cache pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// TopologySpreadConstraints of the cache pods. The operator fills in
	// the label selector when it is empty.
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClassName of the cache pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// PodAnnotations are added to the cache pods.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// PodLabels are added to the cache pods; they cannot replace the labels
	// the operator selects pods by.
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// Autoscaling lets the operator change spec.shards by itself from the
	// shards' fill, request rate and eviction rate (docs/autoscaling.md).
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Rebalance tunes how the shards move keys after a change of shards.
	// +kubebuilder:default={}
	// +optional
	Rebalance RebalanceSpec `json:"rebalance,omitempty"`
}

// AutoscalingSpec is the built-in autoscaler: every pollInterval the
// operator reads each shard's figures, averages them over the shards and,
// like the HorizontalPodAutoscaler, wants ceil(shards × observed / target)
// shards for each target, the largest of them, within [minShards,
// maxShards] and held by the behavior. It writes spec.shards through the
// scale subresource, never while a rebalance runs.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxShards) || !has(self.minShards) || self.minShards <= self.maxShards",message="autoscaling.minShards must not exceed autoscaling.maxShards"
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || has(self.maxShards)",message="autoscaling.maxShards is required when autoscaling is enabled"
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.targets) && (has(self.targets.fillPercent) || has(self.targets.requestRate) || has(self.targets.evictionRate)))",message="autoscaling needs at least one target: fillPercent, requestRate or evictionRate"
type AutoscalingSpec struct {
	// Enabled turns the autoscaler on. Off, the rest of the block is kept
	// but spec.shards is left to the user.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// MinShards is the fewest shards the autoscaler scales down to.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +optional
	MinShards int32 `json:"minShards,omitempty"`

	// MaxShards is the most shards the autoscaler scales up to (required
	// when enabled).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +optional
	MaxShards int32 `json:"maxShards,omitempty"`

	// Targets are the figures to hold per shard, on average over the
	// shards; the one asking for the most shards wins.
	// +kubebuilder:default={fillPercent: 80}
	// +optional
	Targets *AutoscalingTargets `json:"targets,omitempty"`

	// Behavior holds the shard count steady.
	// +kubebuilder:default={}
	// +optional
	Behavior AutoscalingBehavior `json:"behavior,omitempty"`

	// PollInterval is how often the operator reads the shards' figures;
	// rates are measured over it. At least 1s.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="autoscaling.pollInterval must be at least 1s"
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`
	// +optional
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`
}

// AutoscalingTargets are the per-shard figures the autoscaler holds; each is
// optional, and at least one must be given.
type AutoscalingTargets struct {
	// FillPercent is a shard's whole disk use (databases, value files,
	// write-ahead logs, collections) as a percentage of sizeLimit, like the
	// HorizontalPodAutoscaler's averageUtilization, for example 80: scale
	// out before culling evicts data still in use.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 100",message="autoscaling.targets.fillPercent must be a percentage of sizeLimit from 1 to 100"
	// +optional
	FillPercent *int32 `json:"fillPercent,omitempty"`

	// RequestRate is data requests per second per shard, counted at the
	// shard that owns the key (a request forwarded by another shard counts
	// once, at its owner).
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",message="autoscaling.targets.requestRate must be above 0"
	// +optional
	RequestRate *resource.Quantity `json:"requestRate,omitempty"`

	// EvictionRate is items culled per second per shard: culling live data
	// is the cache saying it is too small. It only ever asks for more
	// shards: culling less says nothing of being too large.
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",message="autoscaling.targets.evictionRate must be above 0"
	// +optional
	EvictionRate *resource.Quantity `json:"evictionRate,omitempty"`
}

// AutoscalingBehavior holds the shard count steady, in the spirit of the
// HorizontalPodAutoscaler's behavior.
type AutoscalingBehavior struct {
	// ScaleUp: by default at once (no window) and without a step limit.
	// +kubebuilder:default={stabilizationWindow: "0s"}
	// +optional
	ScaleUp ScalingRules `json:"scaleUp,omitempty"`

	// ScaleDown: by default only after 5 minutes of agreeing figures, one
	// shard at a time (each step drains the departing shard).
	// +kubebuilder:default={stabilizationWindow: "5m", maxStep: 1}
	// +optional
	ScaleDown ScalingRules `json:"scaleDown,omitempty"`

	// Cooldown is how long after a rebalance (or any scale or rollout)
	// ended no change is made, so the figures of the new layout settle.
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`
	// +optional
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`
}

// ScalingRules bound changes in one direction.
type ScalingRules struct {
	// StabilizationWindow: a change is made only when every recommendation
	// within the window agrees (scaling up goes to the lowest of them,
	// scaling down to the highest).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`
	// +optional
	StabilizationWindow *metav1.Duration `json:"stabilizationWindow,omitempty"`

	// MaxStep is the most shards one change adds or removes. Unset: no
	// limit when scaling up, one shard when scaling down (127 lifts it).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=127
	// +optional
	MaxStep *int32 `json:"maxStep,omitempty"`
}

// RebalanceSpec tunes the moves of keys between shards that follow a change
// of spec.shards.
type RebalanceSpec struct {
	// Rate caps the bytes per second each shard sends to the others while
	// keys move (the cacheserver's --rebalance-rate); 0 means no cap. Read
	// at start-up: a change rolls the shards.
	// +kubebuilder:default="64Mi"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !quantity(string(self)).isLessThan(quantity('0'))",message="rebalance.rate must not be negative"
	// +optional
	Rate *resource.Quantity `json:"rate,omitempty"`
}

// StorageSpec is a shard's persistent volume.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.size) || !has(self.size) || !isQuantity(string(self.size)) || !isQuantity(string(oldSelf.size)) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",message="storage.size may grow but not shrink"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable"
type StorageSpec struct {
	// Size of each shard's PersistentVolumeClaim. It may grow (when the
	// storage class allows volume expansion) but not shrink.
	// +kubebuilder:default="2Gi"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",message="storage.size must be positive"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claims; empty means the cluster's default
	// class. Immutable.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// PVCRetentionPolicy says whether claims are kept when the DiskCache is
	// deleted or scaled down.
	// +kubebuilder:default={}
	// +optional
	PVCRetentionPolicy PVCRetentionPolicy `json:"pvcRetentionPolicy,omitempty"`
}

// PVCRetentionPolicy mirrors the StatefulSet's persistentVolumeClaimRetentionPolicy.
type PVCRetentionPolicy struct {
	// WhenDeleted applies when the DiskCache is deleted.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted PVCRetentionPolicyType `json:"whenDeleted,omitempty"`

	// WhenScaled applies to the claims of shards removed by a scale-down.
	// +kubebuilder:default=Retain
	// +optional
	WhenScaled PVCRetentionPolicyType `json:"whenScaled,omitempty"`
}

// MaintenanceSpec schedules expire (remove expired items) and cull (shrink to
// sizeLimit) on every shard.
type MaintenanceSpec struct {
	// Schedule is a standard five-field cron expression (minute hour
	// day-of-month month day-of-week), read in timeZone. Descriptors such
	// as @hourly and a seconds field are not accepted.
	// +kubebuilder:default="*/5 * * * *"
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^\s*(\S+\s+){4}\S+\s*$`
	// +optional
	Schedule string `json:"schedule,omitempty"`

	// TimeZone the schedule is read in (an IANA name such as Europe/Paris).
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$`
	// +optional
	TimeZone string `json:"timeZone,omitempty"`

	// Expire removes expired items on each run.
	// +kubebuilder:default=true
	// +optional
	Expire *bool `json:"expire,omitempty"`

	// Cull shrinks each shard to its sizeLimit on each run.
	// +kubebuilder:default=true
	// +optional
	Cull *bool `json:"cull,omitempty"`

	// Suspend stops scheduling runs; a run under way finishes.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// StartingDeadlineSeconds: a run missed by more than this (for example
	// while the operator was down) is skipped instead of caught up.
	// +kubebuilder:validation:Minimum=0
	// +optional
	StartingDeadlineSeconds *int64 `json:"startingDeadlineSeconds,omitempty"`
}

// AuthSpec configures the bearer token.
type AuthSpec struct {
	// SecretName names an existing Secret in the same namespace whose key
	// "token" holds the bearer token (and, during a rotation the user
	// drives, "token.next" and "token.previous" the tokens also accepted).
	// Empty means a Secret <name>-token that the operator generates (32
	// random bytes) and rotates when the DiskCache's
	// cache.diskcache.dev/rotate-token annotation changes.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// RotationGracePeriod is how long the servers keep accepting the old
	// token after a rotation made the new one current, so that clients
	// reading the mounted Secret (which the kubelet updates within a minute
	// or two) move over without a failed request.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`
	// +optional
	RotationGracePeriod *metav1.Duration `json:"rotationGracePeriod,omitempty"`
}

// Token rotation phases (status.auth.rotation).
const (
	// RotationPropagating: the new token is in the Secret's token.next;
	// the operator waits until every shard accepts it.
	RotationPropagating = "Propagating"
	// RotationRetiring: the new token is current (token) and the old one
	// is still accepted (token.previous) until status.auth.retireTime.
	RotationRetiring = "Retiring"
)

// AuthStatus reports the bearer token's rotation.
type AuthStatus struct {
	// Rotation is the phase of a token rotation under way: Propagating or
	// Retiring; empty when none is.
	// +optional
	Rotation string `json:"rotation,omitempty"`
	// ShardsAcceptingNext is, while Propagating, the number of shards that
	// report they accept the new token; the operator makes it current once
	// it equals spec.shards.
	// +optional
	ShardsAcceptingNext int32 `json:"shardsAcceptingNext,omitempty"`
	// WaitingFor names, while Propagating, the pods of the shards that do
	// not report the new token yet (not ready, not answering, or their
	// mounted Secret not updated by the kubelet yet): the rotation waits
	// for them.
	// +optional
	WaitingFor []string `json:"waitingFor,omitempty"`
	// RetireTime is, while Retiring, when the old token stops being
	// accepted.
	// +optional
	RetireTime *metav1.Time `json:"retireTime,omitempty"`
	// LastRotationTime is when the last rotation retired the old token.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`
	// LastTrigger is the value of the cache.diskcache.dev/rotate-token
	// annotation the last rotation answered.
	// +optional
	LastTrigger string `json:"lastTrigger,omitempty"`
}

// MonitoringSpec configures how Prometheus reads the shards' metrics.
type MonitoringSpec struct {
	// RequireToken makes /metrics answer only requests with the cache's
	// bearer token (--metrics-require-token); the ServiceMonitor then
	// sends it from the token Secret. Off, /metrics is public, as the
	// health probes are.
	// +optional
	RequireToken bool `json:"requireToken,omitempty"`

	// ServiceMonitor makes the operator create a prometheus-operator
	// ServiceMonitor (monitoring.coreos.com/v1) for the client Service,
	// when that API exists in the cluster.
	// +optional
	ServiceMonitor ServiceMonitorSpec `json:"serviceMonitor,omitempty"`
}

// ServiceMonitorSpec is the ServiceMonitor the operator creates.
type ServiceMonitorSpec struct {
	// Enabled creates the ServiceMonitor <name>; without the
	// ServiceMonitor API in the cluster the DiskCache gets a Warning
	// event instead, and the ServiceMonitor appears within 5 minutes of
	// the API's.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Interval between scrapes of each shard; empty means Prometheus'
	// default. The servers render their metrics at most once a second
	// however often they are scraped.
	// +kubebuilder:validation:Pattern=`^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`
	// +optional
	Interval string `json:"interval,omitempty"`

	// Labels are added to the ServiceMonitor, for the serviceMonitorSelector
	// of the Prometheus that should pick it up.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// NetworkPolicySpec is the NetworkPolicy the operator keeps for the cache
// pods.
type NetworkPolicySpec struct {
	// Enabled keeps a NetworkPolicy <name> that admits to the cache pods'
	// port only the clients below, the operator's pods and the cache's
	// own pods (which forward requests and move data to each other).
	// It takes effect only where the cluster's network plugin enforces
	// NetworkPolicy.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Clients are the peers that may reach the cache, as in a
	// NetworkPolicy rule's from: a podSelector alone selects pods of the
	// DiskCache's namespace; with a namespaceSelector, of the selected
	// namespaces. Empty admits no one but the operator and the shards.
	// +optional
	Clients []networkingv1.NetworkPolicyPeer `json:"clients,omitempty"`
}

// TLSSpec turns on HTTPS.
type TLSSpec struct {
	// SecretName names a kubernetes.io/tls Secret (tls.crt, tls.key and
	// optionally ca.crt, which the operator then trusts) in the same namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
}

// DiskCacheStatus is the observed state of a DiskCache.
type DiskCacheStatus struct {
	// ObservedGeneration is the generation of the spec last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Shards is the number of cache pods that exist (the StatefulSet's
	// status.replicas).
	// +optional
	Shards int32 `json:"shards"`

	// ReadyShards is the number of cache pods that are ready.
	// +optional
	ReadyShards int32 `json:"readyShards"`

	// Selector is the label selector of the cache pods (for the scale
	// subresource and HorizontalPodAutoscalers).
	// +optional
	Selector string `json:"selector,omitempty"`

	// Endpoint is the URL of the client Service.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Topology is the shard layout the cache servers report.
	// +optional
	Topology *TopologyStatus `json:"topology,omitempty"`

	// Maintenance reports the scheduled expire and cull runs.
	// +optional
	Maintenance *MaintenanceStatus `json:"maintenance,omitempty"`

	// Autoscaling reports what the built-in autoscaler saw and decided.
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`

	// Auth reports a rotation of the bearer token.
	// +optional
	Auth *AuthStatus `json:"auth,omitempty"`

	// VolumeResizes are the shards' claims whose capacity is still below
	// what the operator asked for when spec.storage.size grew, with what
	// their conditions say; empty when no resize is pending.
	// +listType=map
	// +listMapKey=claim
	// +optional
	VolumeResizes []VolumeResizeStatus `json:"volumeResizes,omitempty"`

	// Conditions: Available, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// VolumeResizeStatus is a claim being grown.
type VolumeResizeStatus struct {
	// Claim is the PersistentVolumeClaim's name.
	Claim string `json:"claim"`
	// Requested is the size the claim requests.
	Requested string `json:"requested"`
	// Capacity is the size its volume has so far.
	// +optional
	Capacity string `json:"capacity,omitempty"`
	// RequestTime is when the operator asked for the size.
	// +optional
	RequestTime *metav1.Time `json:"requestTime,omitempty"`
	// Message says what the claim's conditions and allocated resource
	// status say (Resizing, FileSystemResizePending, ControllerResizeError,
	// NodeResizeError), or that nothing has acted on the request.
	// +optional
	Message string `json:"message,omitempty"`
}

// TopologyStatus is the shard layout as the cache servers report it
// (GET /v1/topology on each ready shard), never as the operator intends it:
// it appears once a server has answered.
type TopologyStatus struct {
	// Epoch is the newest topology epoch a ready shard reports.
	Epoch int64 `json:"epoch"`
	// Shards is the number of shard URLs in that epoch's topology, that is
	// the number of shards keys are spread over. It follows spec.shards
	// once a scale has finished: new shards are added to it when their pods
	// are ready, so while a scale-up is under way it is lower than
	// status.shards.
	Shards int32 `json:"shards"`
	// Rebalancing is true while a move of keys between shards is in force:
	// from the announcement of a new shard count with its previous layout
	// until the operator ends the move, once every shard of both layouts
	// has handed off what it no longer owns. Do not change spec.shards
	// while it is true: the next change waits for this move to end.
	// +optional
	Rebalancing bool `json:"rebalancing"`
	// PreviousShards is the number of shards of the layout the move in
	// force replaces; 0 when no move is in force.
	// +optional
	PreviousShards int32 `json:"previousShards,omitempty"`
	// RebalanceStartTime is when the operator announced the move in force.
	// +optional
	RebalanceStartTime *metav1.Time `json:"rebalanceStartTime,omitempty"`
	// Progress is each shard's part of the move in force, as the shard
	// reports it (GET /v1/topology); empty when no move is in force.
	// +listType=map
	// +listMapKey=shard
	// +optional
	Progress []ShardRebalanceProgress `json:"progress,omitempty"`
	// ReadyShardsOnEpoch is the number of ready shards that report this
	// epoch; when it equals status.readyShards every ready shard routes
	// keys by the same topology.
	// +optional
	ReadyShardsOnEpoch int32 `json:"readyShardsOnEpoch,omitempty"`
}

// ShardRebalanceProgress is one shard's part of a move of keys.
type ShardRebalanceProgress struct {
	// Shard is the ordinal of the shard (the pod <name>-<shard>).
	Shard int32 `json:"shard"`
	// Rebalancing is true while the shard still has keys to hand off, or
	// has not reported the move's epoch yet.
	// +optional
	Rebalancing bool `json:"rebalancing"`
	// ItemsMoved is the number of items the shard has handed off so far.
	// +optional
	ItemsMoved int64 `json:"itemsMoved,omitempty"`
	// BytesMoved is the number of value bytes it has handed off so far.
	// +optional
	BytesMoved int64 `json:"bytesMoved,omitempty"`
	// ItemsRemaining is what its last pass found left to hand off.
	// +optional
	ItemsRemaining int64 `json:"itemsRemaining,omitempty"`
	// BytesRemaining is the value bytes of those items.
	// +optional
	BytesRemaining int64 `json:"bytesRemaining,omitempty"`
	// ItemsReceived is what other shards handed to this one.
	// +optional
	ItemsReceived int64 `json:"itemsReceived,omitempty"`
	// Message says why the shard is not progressing (not ready, not
	// answering, or the last error of its handoff).
	// +optional
	Message string `json:"message,omitempty"`
}

// MaintenanceStatus reports scheduled maintenance.
type MaintenanceStatus struct {
	// LastScheduleTime is when the last run started.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// LastSuccessfulTime is when the last run that reached every shard finished.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`
	// NextScheduleTime is when the next run is due.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// Expired is the number of items the last run expired, over all shards.
	// +optional
	Expired int64 `json:"expired,omitempty"`
	// Culled is the number of items the last run culled, over all shards.
	// +optional
	Culled int64 `json:"culled,omitempty"`
	// PerShard has the last run's result and the usage of each shard.
	// +listType=map
	// +listMapKey=shard
	// +optional
	PerShard []ShardMaintenanceStatus `json:"perShard,omitempty"`
	// LastError is the last run's error, empty when it succeeded.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// DurationMillis is how long the last run took.
	// +optional
	DurationMillis int64 `json:"durationMillis,omitempty"`
	// LastTrigger is the value of the cache.diskcache.dev/run-maintenance
	// annotation that the last manual run answered; another value runs
	// maintenance once more.
	// +optional
	LastTrigger string `json:"lastTrigger,omitempty"`
}

// AutoscalingStatus is the autoscaler's last reading and decision. Figures
// are averages per shard, as decimal strings.
type AutoscalingStatus struct {
	// LastObservationTime is when the shards' figures were last read.
	// +optional
	LastObservationTime *metav1.Time `json:"lastObservationTime,omitempty"`
	// ObservedShards is how many shards answered that reading.
	// +optional
	ObservedShards int32 `json:"observedShards,omitempty"`
	// Fill is the average whole disk use per shard as a fraction of
	// sizeLimit.
	// +optional
	Fill string `json:"fill,omitempty"`
	// RequestRate is the average data requests per second per shard,
	// counted at the owning shard, over the last interval.
	// +optional
	RequestRate string `json:"requestRate,omitempty"`
	// EvictionRate is the average items culled per second per shard over
	// the last interval.
	// +optional
	EvictionRate string `json:"evictionRate,omitempty"`
	// DesiredShards is the shard count the last decision wanted.
	// +optional
	DesiredShards int32 `json:"desiredShards,omitempty"`
	// Decision explains the last decision (also when it changed nothing).
	// +optional
	Decision string `json:"decision,omitempty"`
	// LastScaleTime is when the autoscaler last changed spec.shards.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`
	// LastScaleReason says why it did.
	// +optional
	LastScaleReason string `json:"lastScaleReason,omitempty"`
	// Recommendations within the stabilization windows, kept so that a
	// restarted operator keeps to the windows.
	// +listType=atomic
	// +optional
	Recommendations []AutoscalingRecommendation `json:"recommendations,omitempty"`
}

// AutoscalingRecommendation is the shard count one reading alone asked for.
type AutoscalingRecommendation struct {
	Time   metav1.Time `json:"time"`
	Shards int32       `json:"shards"`
}

// ShardMaintenanceStatus is one shard's last maintenance run and usage.
type ShardMaintenanceStatus struct {
	// Shard is the ordinal of the shard (the pod <name>-<shard>).
	Shard int32 `json:"shard"`
	// LastRunTime is when this shard's last run finished.
	// +optional
	LastRunTime *metav1.Time `json:"lastRunTime,omitempty"`
	// Expired items in the last run.
	// +optional
	Expired int64 `json:"expired,omitempty"`
	// Culled items in the last run.
	// +optional
	Culled int64 `json:"culled,omitempty"`
	// Count of items in the shard after the run.
	// +optional
	Count int64 `json:"count,omitempty"`
	// VolumeBytes used by the shard after the run.
	// +optional
	VolumeBytes int64 `json:"volumeBytes,omitempty"`
	// Error of the last run on this shard, empty when it succeeded.
	// +optional
	Error string `json:"error,omitempty"`
}

// Condition types.
const (
	// ConditionAvailable is True when every shard has a ready pod.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while pods are created, rolled or scaled.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot bring the cache to
	// its spec, or pods are not ready while nothing is rolling out.
	ConditionDegraded = "Degraded"
	// ConditionTopologyAnnounced is True when every ready shard has the
	// topology the operator announces (the <name>-topology ConfigMap).
	ConditionTopologyAnnounced = "TopologyAnnounced"
	// ConditionAutoscalingConflict is True when spec.autoscaling is enabled
	// and a HorizontalPodAutoscaler also targets the DiskCache: the
	// built-in autoscaler then stands aside.
	ConditionAutoscalingConflict = "AutoscalingConflict"
)

// Condition reasons.
const (
	ReasonAllShardsReady     = "AllShardsReady"
	ReasonShardsUnavailable  = "ShardsUnavailable"
	ReasonCreating           = "Creating"
	ReasonRollingUpdate      = "RollingUpdate"
	ReasonScaling            = "Scaling"
	ReasonUpToDate           = "UpToDate"
	ReasonAsExpected         = "AsExpected"
	ReasonReconcileFailed    = "ReconcileFailed"
	ReasonAuthSecretInvalid  = "AuthSecretInvalid"
	ReasonTLSSecretInvalid   = "TLSSecretInvalid"
	ReasonSettingsNotApplied = "SettingsNotApplied"
	ReasonVolumeResizeFailed = "VolumeResizeFailed"
	ReasonPodsNotReady       = "PodsNotReady"
	// ReasonShardFailing (Degraded, and a Warning Event on the pod): a
	// shard's cacheserver exited with an error and is not serving; the
	// message carries the last line it wrote, which says why.
	ReasonShardFailing = "ShardFailing"
	// ReasonShardOOMKilled (Degraded, and a Warning Event on the pod): a
	// shard's cacheserver was killed at its memory limit; Degraded stays
	// True for 10 minutes after the last kill, also once the shard serves
	// again. One Event per kill.
	ReasonShardOOMKilled = "ShardOOMKilled"
	// ReasonMemoryLimitTooLow (Degraded, and a Warning Event):
	// spec.resources.limits.memory is below the estimate of what a shard
	// uses (hotValueBytes, the SQLite page caches of the fanout databases
	// and the Go runtime; docs/operations.md, Memory).
	ReasonMemoryLimitTooLow = "MemoryLimitTooLow"
	// ResizeRequestedAnnotation on a shard's claim is when the operator
	// grew its request (RFC 3339); a resize still pending 10 minutes later
	// makes the DiskCache Degraded (VolumeResizePending).
	ResizeRequestedAnnotation = "cache.diskcache.dev/resize-requested"
	// ReasonVolumeResizePending (Degraded): a claim's capacity is still
	// below its request 10 minutes after the operator grew it.
	ReasonVolumeResizePending = "VolumeResizePending"
	// Token rotation events.
	ReasonTokenRotationStarted = "TokenRotationStarted"
	ReasonTokenSwitched        = "TokenSwitched"
	ReasonTokenRotated         = "TokenRotated"
	ReasonTokenRotationManual  = "TokenRotationManual"
	// ReasonTokenRotationQueued: the rotate-token annotation changed while
	// a rotation was under way; the next one starts when it ends.
	ReasonTokenRotationQueued = "TokenRotationQueued"
	// ReasonDiskFull (Degraded, and a Warning Event): a shard's data volume
	// is full; it refuses writes of new data until space is freed.
	ReasonDiskFull = "DiskFull"
	// ReasonRotationGracePeriodShort (a Warning Event): a rotation runs
	// with a grace period shorter than the kubelet takes to update the
	// Secrets clients mount.
	ReasonRotationGracePeriodShort = "RotationGracePeriodShort"
	// ReasonTokenNotAccepted (a Warning Event): ready pods do not accept
	// the Secret's token, which was changed without token.next first.
	ReasonTokenNotAccepted = "TokenNotAccepted"
	// ReasonDatabaseQuarantined: a shard found a fanout database damaged at
	// start, moved it aside and started it empty.
	ReasonDatabaseQuarantined = "DatabaseQuarantined"
	// ReasonPageSizeKept (a Normal Event): a shard's fanout databases keep
	// another page size than spec.pageSize, the one they were created with.
	ReasonPageSizeKept = "PageSizeKept"
	// ReasonServiceMonitorUnavailable: spec.monitoring.serviceMonitor is
	// enabled but the ServiceMonitor cannot be kept (no such API, or a
	// ServiceMonitor of that name the operator does not own).
	ReasonServiceMonitorUnavailable = "ServiceMonitorUnavailable"
	// TopologyAnnounced reasons; TopologyNotAnnounced is also a Degraded
	// reason (a ready shard could not be told the topology).
	ReasonTopologyAnnounced    = "Announced"
	ReasonTopologyAnnouncing   = "Announcing"
	ReasonTopologyUnknown      = "NoShardAnswered"
	ReasonTopologyNotAnnounced = "TopologyNotAnnounced"
	// AutoscalingConflict reasons.
	ReasonHPAPresent = "HorizontalPodAutoscalerPresent"
	ReasonNoHPA      = "NoHorizontalPodAutoscaler"
	// ReasonRebalancing (Progressing) while keys move between shards;
	// ReasonRebalanceBlocked (Degraded) while a shard of the move is not
	// ready or does not answer, so the move cannot end.
	ReasonRebalancing      = "Rebalancing"
	ReasonRebalanceBlocked = "RebalanceBlocked"
)

// DiskCache is a persistent, disk-backed cache: a StatefulSet of cache
// servers with python-diskcache semantics.
//
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 52",message="metadata.name must be at most 52 characters: pod names and StatefulSet revision labels are made from it"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (lowercase letters, digits and '-', no '.'): the cache's Service and pods are named after it"
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.spec.auth) || !has(self.spec.auth.secretName) || self.spec.auth.secretName != self.metadata.name + '-admin-token'",message="spec.auth.secretName must not name the operator's admin-token Secret (<name>-admin-token): applications that read it would hold the shards' admin token"
// +kubebuilder:resource:shortName=dcache,categories=all
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.shards,statuspath=.status.shards,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Shards",type=integer,JSONPath=`.spec.shards`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyShards`
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].status`,description="Something keeps the cache from working as specified (see the Degraded condition)"
// +kubebuilder:printcolumn:name="Problem",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].reason`,priority=1,description="Reason of the Degraded condition"
// +kubebuilder:printcolumn:name="Size Limit",type=string,JSONPath=`.spec.sizeLimit`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.evictionPolicy`
// +kubebuilder:printcolumn:name="Rebalancing",type=boolean,JSONPath=`.status.topology.rebalancing`,description="Keys are moving between shards after a change of the shard count"
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.topology.epoch`,priority=1,description="Topology epoch the ready shards report"
// +kubebuilder:printcolumn:name="Routed Shards",type=integer,JSONPath=`.status.topology.shards`,priority=1,description="Shards in that topology"
// +kubebuilder:printcolumn:name="Announced",type=string,JSONPath=`.status.conditions[?(@.type=="TopologyAnnounced")].status`,priority=1,description="Every ready shard has the announced topology"
// +kubebuilder:printcolumn:name="Token Rotation",type=string,JSONPath=`.status.auth.rotation`,priority=1,description="Phase of a token rotation under way (Propagating, Retiring)"
// +kubebuilder:printcolumn:name="Last Maintenance",type=date,JSONPath=`.status.maintenance.lastSuccessfulTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DiskCache struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec DiskCacheSpec `json:"spec,omitempty"`
	// +optional
	Status DiskCacheStatus `json:"status,omitempty"`
}

// DiskCacheList is a list of DiskCaches.
//
// +kubebuilder:object:root=true
type DiskCacheList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DiskCache `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DiskCache{}, &DiskCacheList{})
}
