package controllers

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// rawDiskCache is a DiskCache as a user would write it in YAML, so that
// values the Go types cannot hold (malformed quantities, wrong enums) reach
// the API server.
func rawDiskCache(t *testing.T, ns, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	doc := "apiVersion: cache.diskcache.dev/v1alpha1\nkind: DiskCache\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\nspec:\n" + indent(specYAML)
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	return u
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestInvalidSpecsAreRejected(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	cases := []struct {
		name, spec, want string
	}{
		{"negative shards", "shards: -1", "spec.shards in body should be greater than or equal to 1"},
		{"zero shards", "shards: 0", "spec.shards in body should be greater than or equal to 1"},
		{"too many shards", "shards: 129", "spec.shards in body should be less than or equal to 128"},
		{"unknown eviction policy", "evictionPolicy: random", `spec.evictionPolicy: Unsupported value: "random"`},
		{"sizeLimit above storage.size", "sizeLimit: 20Gi\nstorage:\n  size: 10Gi", "sizeLimit must leave headroom on the volume"},
		{"sizeLimit above default storage.size", "sizeLimit: 3Gi", "sizeLimit must leave headroom on the volume"},
		{"sizeLimit equal to storage.size", "sizeLimit: 10Gi\nstorage:\n  size: 10Gi", "sizeLimit must leave headroom on the volume"},
		{"sizeLimit without room for the logs", "sizeLimit: 900Mi\nstorage:\n  size: 1Gi\nfanout: 64", "sizeLimit must leave headroom on the volume"},
		{"sizeLimit just past the headroom", "sizeLimit: 842Mi\nstorage:\n  size: 1Gi\nfanout: 8", "sizeLimit must leave headroom on the volume"},
		{"malformed sizeLimit", "sizeLimit: 1GB", "spec.sizeLimit"},
		{"word as sizeLimit", "sizeLimit: lots", "spec.sizeLimit"},
		{"negative sizeLimit", "sizeLimit: -1Gi", "sizeLimit must be positive"},
		{"malformed storage size", "storage:\n  size: 10 gigs", "spec.storage.size"},
		{"zero storage size", "storage:\n  size: \"0\"", "storage.size must be positive"},
		{"malformed diskMinFileSize", "diskMinFileSize: 32kb", "spec.diskMinFileSize"},
		{"negative maxKeyBytes", "maxKeyBytes: -5", "maxKeyBytes must be positive"},
		{"maxKeyBytes over 128Ki", "maxKeyBytes: 129Ki", "maxKeyBytes must be at most 128Ki"},
		{"negative hotValueBytes", "hotValueBytes: -1Mi", "hotValueBytes must not be negative"},
		{"page size not a power of two", "pageSize: 3000", "spec.pageSize: Unsupported value: 3000"},
		{"zero fanout", "fanout: 0", "spec.fanout in body should be greater than or equal to 1"},
		{"fanout too large", "fanout: 65", "spec.fanout in body should be less than or equal to 64"},
		{"negative cullLimit", "cullLimit: -1", "spec.cullLimit in body should be greater than or equal to 0"},
		{"malformed databaseTimeout", "databaseTimeout: soon", "spec.databaseTimeout in body should match"},
		{"zero databaseTimeout", "databaseTimeout: 0s", "databaseTimeout must be more than 0"},
		{"zero databaseTimeout in ms", "databaseTimeout: 0.0ms", "databaseTimeout must be more than 0"},
		{"cron with three fields", "maintenance:\n  schedule: '* * *'", "spec.maintenance.schedule in body should match"},
		{"unknown cron macro", "maintenance:\n  schedule: '@fortnightly'", "spec.maintenance.schedule in body should match"},
		{"time zone with spaces", "maintenance:\n  timeZone: Mars/Olympus Mons", "spec.maintenance.timeZone in body should match"},
		{"negative startingDeadlineSeconds", "maintenance:\n  startingDeadlineSeconds: -1", "spec.maintenance.startingDeadlineSeconds in body should be greater than or equal to 0"},
		{"unknown retention policy", "storage:\n  pvcRetentionPolicy:\n    whenDeleted: Keep", `spec.storage.pvcRetentionPolicy.whenDeleted: Unsupported value: "Keep"`},
		{"unknown pull policy", "imagePullPolicy: Sometimes", `spec.imagePullPolicy: Unsupported value: "Sometimes"`},
		{"tls without secretName", "tls: {}", "spec.tls.secretName: Required value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8s.Create(bg, rawDiskCache(t, ns, "bad", c.spec))
			if err == nil {
				_ = k8s.Delete(bg, rawDiskCache(t, ns, "bad", c.spec))
				t.Fatalf("accepted:\n%s", c.spec)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not say %q:\n%v", c.want, err)
			}
		})
	}
	t.Run("name too long", func(t *testing.T) {
		err := k8s.Create(bg, rawDiskCache(t, ns, strings.Repeat("a", 53), "shards: 1"))
		if err == nil || !strings.Contains(err.Error(), "metadata.name must be at most 52 characters") {
			t.Errorf("53-character name: %v", err)
		}
	})
	t.Run("name with a dot", func(t *testing.T) {
		// Accepted, it could never be reconciled: a Service's name is a
		// DNS label.
		err := k8s.Create(bg, rawDiskCache(t, ns, "my.cache", "shards: 1"))
		if err == nil || !strings.Contains(err.Error(), "metadata.name must be a DNS label") {
			t.Errorf("name with a dot: %v", err)
		}
		u := rawDiskCache(t, ns, "1-cache", "shards: 1")
		if err := k8s.Create(bg, u); err != nil {
			t.Errorf("a DNS label starting with a digit: %v", err)
		}
		_ = k8s.Delete(bg, u)
	})
	t.Run("the admin token as the data token", func(t *testing.T) {
		err := k8s.Create(bg, rawDiskCache(t, ns, "adm", "auth:\n  secretName: adm-admin-token"))
		if err == nil || !strings.Contains(err.Error(), "must not name the operator's admin-token Secret") {
			t.Errorf("auth.secretName naming the admin-token Secret: %v", err)
		}
	})
	t.Run("valid quantities in every form", func(t *testing.T) {
		u := rawDiskCache(t, ns, "good", "sizeLimit: 1073741824\nstorage:\n  size: 1.5Gi\ndiskMinFileSize: 0\nmaxValueBytes: 1e9\ndatabaseTimeout: 1m30s\nmaintenance:\n  schedule: '*/10 * * * *'\n  timeZone: America/Argentina/Buenos_Aires")
		if err := k8s.Create(bg, u); err != nil {
			t.Errorf("rejected: %v", err)
		}
		// 90% of 1Gi less 8 × 8Mi and 16Mi is 841.6Mi.
		u = rawDiskCache(t, ns, "headroom", "sizeLimit: 841Mi\nstorage:\n  size: 1Gi\nfanout: 8")
		if err := k8s.Create(bg, u); err != nil {
			t.Errorf("sizeLimit within the headroom rule rejected: %v", err)
		}
	})
}

func TestImmutableAndMonotonicFields(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	base := "storage:\n  size: 10Gi\n  storageClassName: fast\nfanout: 8"
	cases := []struct {
		name, spec, want string
	}{
		{"shrinking storage", "storage:\n  size: 5Gi\n  storageClassName: fast\nfanout: 8", "storage.size may grow but not shrink"},
		{"shrinking storage in other units", "storage:\n  size: 10000Mi\n  storageClassName: fast\nfanout: 8", "storage.size may grow but not shrink"},
		{"changing storage class", "storage:\n  size: 10Gi\n  storageClassName: slow\nfanout: 8", "storage.storageClassName is immutable"},
		{"removing storage class", "storage:\n  size: 10Gi\nfanout: 8", "storage.storageClassName is immutable"},
		{"changing fanout", "storage:\n  size: 10Gi\n  storageClassName: fast\nfanout: 16", "fanout is immutable"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "imm-" + string(rune('a'+i))
			if err := k8s.Create(bg, rawDiskCache(t, ns, name, base)); err != nil {
				t.Fatal(err)
			}
			updateRaw(t, ns, name, c.spec, c.want)
		})
	}
	t.Run("adding a storage class", func(t *testing.T) {
		if err := k8s.Create(bg, rawDiskCache(t, ns, "imm-add", "storage:\n  size: 2Gi")); err != nil {
			t.Fatal(err)
		}
		updateRaw(t, ns, "imm-add", "storage:\n  size: 2Gi\n  storageClassName: fast", "storage.storageClassName is immutable")
	})
	t.Run("growing storage and changing live settings", func(t *testing.T) {
		if err := k8s.Create(bg, rawDiskCache(t, ns, "imm-grow", base)); err != nil {
			t.Fatal(err)
		}
		updateRaw(t, ns, "imm-grow", "storage:\n  size: 20Gi\n  storageClassName: fast\nfanout: 8\nsizeLimit: 15Gi\nevictionPolicy: none\nshards: 5", "")
	})
}

// updateRaw replaces the spec of a DiskCache; wantErr empty means it must succeed.
func updateRaw(t *testing.T, ns, name, spec, wantErr string) {
	t.Helper()
	next := rawDiskCache(t, ns, name, spec)
	var err error
	eventually(t, "update", func() error {
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(next.GroupVersionKind())
		if err := k8s.Get(bg, keyOf(ns, name), cur); err != nil {
			return err
		}
		next.SetResourceVersion(cur.GetResourceVersion())
		err = k8s.Update(bg, next)
		if err != nil && strings.Contains(err.Error(), "the object has been modified") {
			return err // the operator wrote status meanwhile: retry
		}
		return nil
	})
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("update rejected: %v", err)
	case wantErr != "" && err == nil:
		t.Errorf("update accepted:\n%s", spec)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("error does not say %q:\n%v", wantErr, err)
	case err != nil:
		t.Logf("%v", err)
	}
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
