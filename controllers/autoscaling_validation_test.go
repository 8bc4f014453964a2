package controllers

import (
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// TestAutoscalingSpecValidation: the CEL rules and bounds of
// spec.autoscaling reject what the autoscaler could not honour, with the
// messages docs/crd.md lists, and the CRD defaults what it leaves out.
func TestAutoscalingSpecValidation(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	on := "autoscaling:\n  enabled: true\n  maxShards: 4\n"
	cases := []struct {
		name, spec, want string
	}{
		{"minShards above maxShards", "shards: 3\nautoscaling:\n  enabled: true\n  minShards: 4\n  maxShards: 2", "autoscaling.minShards must not exceed autoscaling.maxShards"},
		{"minShards above maxShards while off", "autoscaling:\n  minShards: 4\n  maxShards: 2", "autoscaling.minShards must not exceed autoscaling.maxShards"},
		{"maxShards above 128", "autoscaling:\n  maxShards: 129", "spec.autoscaling.maxShards in body should be less than or equal to 128"},
		{"minShards 0", "autoscaling:\n  minShards: 0\n  maxShards: 2", "spec.autoscaling.minShards in body should be greater than or equal to 1"},
		{"enabled without maxShards", "autoscaling:\n  enabled: true", "autoscaling.maxShards is required when autoscaling is enabled"},
		{"shards above maxShards", "shards: 5\n" + on, "spec.shards must be within [autoscaling.minShards, autoscaling.maxShards] while autoscaling is enabled"},
		{"shards below minShards", "shards: 2\n" + on + "  minShards: 3", "spec.shards must be within [autoscaling.minShards, autoscaling.maxShards]"},
		{"no target", on + "  targets: {}", "autoscaling needs at least one target"},
		{"zero fill", on + "  targets:\n    fillPercent: 0", "autoscaling.targets.fillPercent must be a percentage of sizeLimit from 1 to 100"},
		{"fill above 100", on + "  targets:\n    fillPercent: 120", "autoscaling.targets.fillPercent must be a percentage of sizeLimit from 1 to 100"},
		{"negative fill", on + "  targets:\n    fillPercent: -5", "autoscaling.targets.fillPercent must be a percentage"},
		{"fractional fill", on + "  targets:\n    fillPercent: 0.8", "fillPercent"},
		{"zero request rate", on + "  targets:\n    requestRate: 0", "autoscaling.targets.requestRate must be above 0"},
		{"negative eviction rate", on + "  targets:\n    evictionRate: \"-3\"", "autoscaling.targets.evictionRate must be above 0"},
		{"malformed request rate", on + "  targets:\n    requestRate: lots", "spec.autoscaling.targets.requestRate"},
		{"malformed poll interval", on + "  pollInterval: often", "spec.autoscaling.pollInterval in body should match"},
		{"malformed window", on + "  behavior:\n    scaleDown:\n      stabilizationWindow: 5 minutes", "spec.autoscaling.behavior.scaleDown.stabilizationWindow in body should match"},
		{"zero step", on + "  behavior:\n    scaleUp:\n      maxStep: 0", "spec.autoscaling.behavior.scaleUp.maxStep in body should be greater than or equal to 1"},
		{"zero poll interval", on + "  pollInterval: 0s", "autoscaling.pollInterval must be at least 1s"},
		{"poll interval under a second", on + "  pollInterval: 500ms", "autoscaling.pollInterval must be at least 1s"},
		// Past Go's time.Duration (about 2,562,047h) the operator could not
		// read the object back, and its watch of every DiskCache failed.
		{"overflowing window", on + "  behavior:\n    scaleDown:\n      stabilizationWindow: 3000000h", "spec.autoscaling.behavior.scaleDown.stabilizationWindow in body should match"},
		{"overflowing cooldown in parts", on + "  behavior:\n    cooldown: 99999h99999h99999h99999h99999h", "spec.autoscaling.behavior.cooldown in body should match"},
		{"overflowing database timeout", "databaseTimeout: 3000000h", "spec.databaseTimeout in body should match"},
		{"overflowing poll interval", on + "  pollInterval: 9999999999999999999ns", "spec.autoscaling.pollInterval in body should match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8s.Create(bg, rawDiskCache(t, ns, "bad", c.spec))
			if err == nil {
				_ = k8s.Delete(bg, rawDiskCache(t, ns, "bad", c.spec))
				t.Fatalf("accepted:\n%s", c.spec)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not say %q:\n%v", c.want, err)
			}
		})
	}

	t.Run("valid and defaulted", func(t *testing.T) {
		// Off, shards need not be in the range.
		if err := k8s.Create(bg, rawDiskCache(t, ns, "disabled", "shards: 9\nautoscaling:\n  minShards: 1\n  maxShards: 3")); err != nil {
			t.Errorf("disabled autoscaling with shards outside the range rejected: %v", err)
		}
		full := "shards: 2\nautoscaling:\n  enabled: true\n  minShards: 2\n  maxShards: 8\n  targets:\n    fillPercent: 75\n    requestRate: 1500\n    evictionRate: \"2.5\"\n" +
			"  behavior:\n    scaleUp:\n      stabilizationWindow: 30s\n      maxStep: 2\n    scaleDown:\n      stabilizationWindow: 10m\n    cooldown: 1m\n  pollInterval: 15s"
		if err := k8s.Create(bg, rawDiskCache(t, ns, "full", full)); err != nil {
			t.Errorf("a full autoscaling block rejected: %v", err)
		}
		// A manifest that leaves shards to the autoscaler (docs/autoscaling.md)
		// gets the default 1 on create, below minShards.
		if err := k8s.Create(bg, rawDiskCache(t, ns, "gitops", on+"  minShards: 2")); err != nil {
			t.Errorf("a manifest without shards, minShards 2, rejected: %v", err)
		}
		// A scaleDown window alone keeps the one-shard step (docs/crd.md).
		windowOnly := cachev1alpha1.AutoscalingSpec{Enabled: true, MaxShards: 8,
			Behavior: cachev1alpha1.AutoscalingBehavior{ScaleDown: cachev1alpha1.ScalingRules{StabilizationWindow: &metav1.Duration{Duration: 10 * time.Minute}}}}
		windowOnly.Default()
		if st := windowOnly.Behavior.ScaleDown.MaxStep; st == nil || *st != 1 {
			t.Errorf("scaleDown with only a window: maxStep %v after defaulting, want 1", st)
		}
		if err := k8s.Create(bg, rawDiskCache(t, ns, "longest", "databaseTimeout: 99999h59m59s999ms\nautoscaling:\n  enabled: true\n  maxShards: 3\n  pollInterval: 1s")); err != nil {
			t.Errorf("the longest durations the pattern allows rejected: %v", err)
		}
		if err := k8s.Create(bg, rawDiskCache(t, ns, "minimal", "autoscaling:\n  enabled: true\n  maxShards: 3")); err != nil {
			t.Fatalf("a minimal autoscaling block rejected: %v", err)
		}
		dc := get(t, ns, "minimal", &cachev1alpha1.DiskCache{})
		a := dc.Spec.Autoscaling
		if a.MinShards != 1 || a.Targets.FillPercent == nil || *a.Targets.FillPercent != 80 || a.Targets.RequestRate != nil ||
			a.PollInterval.Duration.String() != "30s" || a.Behavior.Cooldown.Duration.String() != "2m0s" ||
			a.Behavior.ScaleUp.StabilizationWindow.Duration != 0 || a.Behavior.ScaleUp.MaxStep != nil ||
			a.Behavior.ScaleDown.StabilizationWindow.Duration.String() != "5m0s" || a.Behavior.ScaleDown.MaxStep == nil || *a.Behavior.ScaleDown.MaxStep != 1 {
			t.Errorf("defaults: %+v", a)
		}
		// The Go defaults are the CRD's.
		var local cachev1alpha1.AutoscalingSpec
		local.MaxShards = 3
		local.Enabled = true
		local.Default()
		if *local.Targets.FillPercent != *a.Targets.FillPercent || local.PollInterval.Duration != a.PollInterval.Duration ||
			local.Behavior.Cooldown.Duration != a.Behavior.Cooldown.Duration ||
			local.Behavior.ScaleDown.StabilizationWindow.Duration != a.Behavior.ScaleDown.StabilizationWindow.Duration ||
			*local.Behavior.ScaleDown.MaxStep != *a.Behavior.ScaleDown.MaxStep || local.MinShards != a.MinShards {
			t.Errorf("Go defaults %+v differ from the CRD's %+v", local, a)
		}
	})

	t.Run("the scale subresource keeps to the range", func(t *testing.T) {
		if err := k8s.Create(bg, rawDiskCache(t, ns, "scaled", "shards: 2\nautoscaling:\n  enabled: true\n  minShards: 1\n  maxShards: 3")); err != nil {
			t.Fatal(err)
		}
		dc := &cachev1alpha1.DiskCache{}
		dc.Namespace, dc.Name = ns, "scaled"
		try := func(n int32) error {
			var err error
			eventually(t, "scale update", func() error {
				scale := &autoscalingv1.Scale{}
				if err := k8s.SubResource("scale").Get(bg, dc, scale); err != nil {
					return err
				}
				scale.Spec.Replicas = n
				err = k8s.SubResource("scale").Update(bg, dc, client.WithSubResourceBody(scale))
				if err != nil && strings.Contains(err.Error(), "the object has been modified") {
					return err
				}
				return nil
			})
			return err
		}
		if err := try(4); err == nil || !strings.Contains(err.Error(), "spec.shards must be within") {
			t.Errorf("scale to 4 above maxShards 3: %v", err)
		}
		if err := try(3); err != nil {
			t.Errorf("scale to 3: %v", err)
		}
	})
}
