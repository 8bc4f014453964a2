package controllers

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// projectedFiles is what the kubelet puts into a volume of Secrets, as it
// projects them: only the listed items of each source, a missing key an
// error unless the source is optional.
func projectedFiles(v corev1.Volume, secrets map[string]map[string][]byte) ([]string, error) {
	var sources []corev1.VolumeProjection
	switch {
	case v.Projected != nil:
		sources = v.Projected.Sources
	case v.Secret != nil:
		sources = []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName},
			Items:                v.Secret.Items, Optional: v.Secret.Optional,
		}}}
	default:
		return nil, fmt.Errorf("volume %s is neither a Secret nor projected", v.Name)
	}
	var files []string
	for _, src := range sources {
		s := src.Secret
		if s == nil {
			return nil, fmt.Errorf("volume %s projects something else than a Secret", v.Name)
		}
		optional := s.Optional != nil && *s.Optional
		data, ok := secrets[s.Name]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("Secret %s missing", s.Name)
		}
		if len(s.Items) == 0 {
			for k := range data {
				files = append(files, k)
			}
			continue
		}
		for _, it := range s.Items {
			if _, ok := data[it.Key]; !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("Secret %s has no key %s", s.Name, it.Key)
			}
			files = append(files, it.Path)
		}
	}
	slices.Sort(files)
	return files, nil
}

func volumeNamed(t *testing.T, vols []corev1.Volume, name string) corev1.Volume {
	t.Helper()
	for _, v := range vols {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

// TestSecretVolumesMountOnlyTheirKeys: the pods get only the keys they
// read from the TLS Secret (tls.crt, tls.key, and ca.crt when it has one)
// and from the token Secret (token, and token.next and token.previous
// during a rotation), whatever else those Secrets hold.
func TestSecretVolumesMountOnlyTheirKeys(t *testing.T) {
	dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "web-tls"}
	})
	vols := buildStatefulSet(dc, "img", "hash", true, nil).Spec.Template.Spec.Volumes
	for _, tc := range []struct {
		volume  string
		secrets map[string]map[string][]byte
		want    []string // nil: the pod cannot start
	}{
		{TLSVolume, map[string]map[string][]byte{"web-tls": {"tls.crt": nil, "tls.key": nil, "ca.crt": nil, "other-app.key": nil}},
			[]string{"ca.crt", "tls.crt", "tls.key"}},
		{TLSVolume, map[string]map[string][]byte{"web-tls": {"tls.crt": nil, "tls.key": nil, "password": nil}},
			[]string{"tls.crt", "tls.key"}},
		{TLSVolume, map[string]map[string][]byte{"web-tls": {"tls.crt": nil}}, nil},
		{TLSVolume, map[string]map[string][]byte{}, nil},
		{TokenVolume, map[string]map[string][]byte{"c-token": {"token": nil, "unrelated": nil}}, []string{"token"}},
		{TokenVolume, map[string]map[string][]byte{"c-token": {"token": nil, "token.next": nil}}, []string{"token", "token.next"}},
		{TokenVolume, map[string]map[string][]byte{"c-token": {"token": nil, "token.previous": nil}}, []string{"token", "token.previous"}},
		{TokenVolume, map[string]map[string][]byte{"c-token": {"token.next": nil}}, nil},
		{TokenVolume, map[string]map[string][]byte{}, nil},
	} {
		got, err := projectedFiles(volumeNamed(t, vols, tc.volume), tc.secrets)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("volume %s with Secrets %v: mounted %v, want the pod not to start", tc.volume, tc.secrets, got)
		case tc.want != nil && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("volume %s with Secrets %v: %v, %v; want %v", tc.volume, tc.secrets, got, err, tc.want)
		}
	}
}
