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
}

// TokenSecretName is the Secret holding the bearer token: spec.auth.secretName
// or the generated <name>-token.
func (d *DiskCache) TokenSecretName() string {
	if d.Spec.Auth.SecretName != "" {
		return d.Spec.Auth.SecretName
	}
	return d.Name + "-token"
}
