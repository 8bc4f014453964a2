package v1alpha1_test

import (
	"os"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/diskcache-operator/diskcache-operator/settings"
)

// specProperties returns the properties of .spec in the generated CRD.
func specProperties(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../../config/crd/bases/cache.diskcache.dev_diskcaches.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties map[string]any `json:"properties"`
							} `json:"spec"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("CRD has %d versions, want 1", len(crd.Spec.Versions))
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties
}

// The CRD's evictionPolicy enum (from the kubebuilder marker) and the
// settings contract's list of policies are the same list.
func TestCRDEvictionPolicyEnum(t *testing.T) {
	prop, _ := specProperties(t)[settings.NameEvictionPolicy.Field()].(map[string]any)
	raw, _ := prop["enum"].([]any)
	var enum []settings.EvictionPolicy
	for _, v := range raw {
		s, _ := v.(string)
		enum = append(enum, settings.EvictionPolicy(s))
	}
	if want := settings.Policies(); !slices.Equal(enum, want) {
		t.Errorf("CRD spec.%s enum = %v, settings.Policies() = %v", settings.NameEvictionPolicy.Field(), enum, want)
	}
}

// Every setting the operator manages is a spec field under the name
// settings.Name.Field gives it.
func TestCRDSettingFields(t *testing.T) {
	props := specProperties(t)
	for _, n := range settings.ServerFlags() {
		if _, ok := props[n.Field()]; !ok {
			t.Errorf("setting %s: the CRD has no spec.%s", n, n.Field())
		}
	}
}
