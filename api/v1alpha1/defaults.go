package v1alpha1

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Default fills every unset field with its default, the same values the
// CRD's defaults give, so code never depends on the API server having
// defaulted an object.
func (s *DiskCacheSpec) Default() {
	if s.Shards == 0 {
		s.Shards = DefaultShards
	}
	if s.SizeLimit == nil {
		q := resource.MustParse(DefaultSizeLimit)
		s.SizeLimit = &q
	}
	if s.EvictionPolicy == "" {
		s.EvictionPolicy = DefaultEvictionPolicy
	}
	if s.CullLimit == nil {
		v := DefaultCullLimit
		s.CullLimit = &v
	}
	if s.Fanout == 0 {
		s.Fanout = DefaultFanout
	}
	if s.DatabaseTimeout == nil {
		d, _ := time.ParseDuration(DefaultDatabaseTimeout)
		s.DatabaseTimeout = &metav1.Duration{Duration: d}
	}
	if s.DiskMinFileSize == nil {
		q := resource.MustParse(DefaultDiskMinFileSize)
		s.DiskMinFileSize = &q
	}
	if s.Storage.Size == nil {
		q := resource.MustParse(DefaultStorageSize)
		s.Storage.Size = &q
	}
	if s.Storage.PVCRetentionPolicy.WhenDeleted == "" {
		s.Storage.PVCRetentionPolicy.WhenDeleted = RetainPVC
	}
	if s.Storage.PVCRetentionPolicy.WhenScaled == "" {
		s.Storage.PVCRetentionPolicy.WhenScaled = RetainPVC
	}
	if s.Auth.RotationGracePeriod == nil {
		d, _ := time.ParseDuration(DefaultRotationGracePeriod)
		s.Auth.RotationGracePeriod = &metav1.Duration{Duration: d}
	}
	if s.Rebalance.Rate == nil {
		q := resource.MustParse(DefaultRebalanceRate)
		s.Rebalance.Rate = &q
	}
	m := &s.Maintenance
	if m.Schedule == "" {
		m.Schedule = DefaultSchedule
	}
	if m.TimeZone == "" {
		m.TimeZone = DefaultTimeZone
	}
	if m.Expire == nil {
		t := true
		m.Expire = &t
	}
	if m.Cull == nil {
		t := true
		m.Cull = &t
	}
	if a := s.Autoscaling; a != nil {
		a.Default()
	}
}

// Autoscaling defaults, also in the CRD's markers.
const (
	DefaultMinShards       int32 = 1
	DefaultFillPercent     int32 = 80
	DefaultPollInterval          = 30 * time.Second
	DefaultScaleUpWindow         = 0
	DefaultScaleDownWindow       = 5 * time.Minute
	DefaultScaleDownStep   int32 = 1
	DefaultCooldown              = 2 * time.Minute
)

// Default fills the unset autoscaling fields. Scaling down goes one shard
// at a time unless scaleDown.maxStep says otherwise, whether or not the
// user wrote a scaleDown block (a window alone keeps the step).
func (a *AutoscalingSpec) Default() {
	if a.MinShards == 0 {
		a.MinShards = DefaultMinShards
	}
	if a.Targets == nil {
		fill := DefaultFillPercent
		a.Targets = &AutoscalingTargets{FillPercent: &fill}
	}
	if a.PollInterval == nil {
		a.PollInterval = &metav1.Duration{Duration: DefaultPollInterval}
	}
	b := &a.Behavior
	if b.ScaleUp.StabilizationWindow == nil {
		b.ScaleUp.StabilizationWindow = &metav1.Duration{Duration: DefaultScaleUpWindow}
	}
	if b.ScaleDown.MaxStep == nil {
		step := DefaultScaleDownStep
		b.ScaleDown.MaxStep = &step
	}
	if b.ScaleDown.StabilizationWindow == nil {
		b.ScaleDown.StabilizationWindow = &metav1.Duration{Duration: DefaultScaleDownWindow}
	}
	if b.Cooldown == nil {
		b.Cooldown = &metav1.Duration{Duration: DefaultCooldown}
	}
}

// TokenSecretName is the Secret holding the bearer token: spec.auth.secretName
// or the generated <name>-token.
func (d *DiskCache) TokenSecretName() string {
	if d.Spec.Auth.SecretName != "" {
		return d.Spec.Auth.SecretName
	}
	return d.Name + "-token"
}
