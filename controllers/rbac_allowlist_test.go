package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// permission is one line of the operator's documented permissions: the
// verbs it has on a resource ("pods", or a subresource "pods/exec") of an
// API group ("" for the core group).
type permission struct {
	group, resource string
	verbs           []string
}

// operatorClusterPermissions is everything the operator's ClusterRole may
// grant (docs/operations.md, "Permissions"). It is the one place to
// change, together with the +kubebuilder:rbac markers in controllers/
// (then `make manifests`) and the docs, when the operator needs more or
// less: TestShippedRBACMatchesAllowList fails when config/rbac/role.yaml or
// the markers grant anything else, and TestOperatorHasNoMoreThanAllowed
// asks the API server what the operator's ServiceAccount may do.
var operatorClusterPermissions = []permission{
	{"cache.diskcache.dev", "diskcaches", []string{"get", "list", "watch"}},
	{"cache.diskcache.dev", "diskcaches/status", []string{"get", "patch", "update"}},
	{"cache.diskcache.dev", "diskcaches/finalizers", []string{"update"}},
	// The autoscaler changes spec.shards only through the scale
	// subresource, and stands aside when an HPA targets the DiskCache.
	{"cache.diskcache.dev", "diskcaches/scale", []string{"get", "update"}},
	{"autoscaling", "horizontalpodautoscalers", []string{"list", "watch"}},
	{"apps", "statefulsets", []string{"create", "get", "list", "patch", "watch"}},
	{"", "services", []string{"create", "get", "list", "patch", "watch"}},
	{"", "configmaps", []string{"create", "get", "list", "patch", "watch"}},
	{"policy", "poddisruptionbudgets", []string{"create", "get", "list", "patch", "watch"}},
	// The token Secrets are created; the generated data token Secret is
	// updated by a token rotation only. Nothing is deleted (the garbage
	// collector removes children through owner references).
	{"", "secrets", []string{"create", "get", "list", "update", "watch"}},
	{"", "pods", []string{"get", "list", "watch"}},
	{"", "persistentvolumeclaims", []string{"get", "list", "patch", "watch"}},
	{"", "events", []string{"create", "patch"}},
	{"events.k8s.io", "events", []string{"create", "patch"}},
	// Opt-in children (spec.networkPolicy, spec.monitoring.serviceMonitor),
	// deleted when turned off. ServiceMonitors are read directly, never
	// watched (their API may not exist).
	{"networking.k8s.io", "networkpolicies", []string{"create", "delete", "get", "list", "patch", "watch"}},
	{"monitoring.coreos.com", "servicemonitors", []string{"create", "delete", "get", "patch"}},
}

// operatorMetricsAuthPermissions is what the metrics auth ClusterRole
// (config/rbac/metrics_auth_role.yaml) grants: the secure /metrics asks
// the API server who a scraper is and whether it may read.
var operatorMetricsAuthPermissions = []permission{
	{"authentication.k8s.io", "tokenreviews", []string{"create"}},
	{"authorization.k8s.io", "subjectaccessreviews", []string{"create"}},
}

// operatorLeaderElectionPermissions is what the leader election Role
// (config/rbac/leader_election_role.yaml) grants in the operator's own
// namespace: client-go's LeaseLock only gets, creates and updates its Lease.
var operatorLeaderElectionPermissions = []permission{
	{"coordination.k8s.io", "leases", []string{"create", "get", "update"}},
	{"", "events", []string{"create", "patch"}},
	{"events.k8s.io", "events", []string{"create", "patch"}},
}

// grant is one verb on one resource of one group.
type grant struct{ group, resource, verb string }

func (g grant) String() string {
	if g.group == "" {
		return g.verb + " " + g.resource
	}
	return g.verb + " " + g.resource + "." + g.group
}

func grantsOf(perms []permission) map[grant]bool {
	out := map[grant]bool{}
	for _, p := range perms {
		for _, v := range p.verbs {
			out[grant{p.group, p.resource, v}] = true
		}
	}
	return out
}

// rulesGrants expands RBAC rules; a rule the allow-list cannot express
// (resource names, non-resource URLs) is an error.
func rulesGrants(t *testing.T, what string, rules []rbacv1.PolicyRule) map[grant]bool {
	t.Helper()
	out := map[grant]bool{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("%s: rule %+v names resources or URLs: extend the allow-list (and this test) to express it", what, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[grant{g, res, v}] = true
				}
			}
		}
	}
	return out
}

// diffGrants lists what got has beyond want and what it lacks.
func diffGrants(got, want map[grant]bool) (extra, missing []string) {
	for g := range got {
		if !want[g] {
			extra = append(extra, g.String())
		}
	}
	for g := range want {
		if !got[g] {
			missing = append(missing, g.String())
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	return extra, missing
}

// rbacMarker matches a +kubebuilder:rbac marker.
var rbacMarker = regexp.MustCompile(`^//\s*\+kubebuilder:rbac:(.*)$`)

// markerRules reads the +kubebuilder:rbac markers of the controllers
// package, from which controller-gen generates the ClusterRole.
func markerRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, line := range strings.Split(string(readFile(t, f)), "\n") {
			m := rbacMarker.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			var r rbacv1.PolicyRule
			for _, kv := range strings.Split(m[1], ",") {
				k, v, _ := strings.Cut(kv, "=")
				vals := strings.Split(strings.Trim(v, `"`), ";")
				switch k {
				case "groups":
					r.APIGroups = vals
				case "resources":
					r.Resources = vals
				case "verbs":
					r.Verbs = vals
				case "resourceNames":
					r.ResourceNames = vals
				case "urls":
					r.NonResourceURLs = vals
				default:
					t.Errorf("%s: unknown rbac marker field %q in %q", f, k, line)
				}
			}
			rules = append(rules, r)
		}
	}
	if len(rules) == 0 {
		t.Fatal("no +kubebuilder:rbac markers found")
	}
	return rules
}

// TestShippedRBACMatchesAllowList: the shipped ClusterRole, the markers it
// is generated from and the leader election Role grant exactly the
// documented permissions: nothing more (no deleting, no Secret updates, no
// exec), nothing less.
func TestShippedRBACMatchesAllowList(t *testing.T) {
	var cr rbacv1.ClusterRole
	readYAML(t, filepath.Join("..", "config", "rbac", "role.yaml"), &cr)
	var role rbacv1.Role
	readYAML(t, filepath.Join("..", "config", "rbac", "leader_election_role.yaml"), &role)
	var metricsAuth rbacv1.ClusterRole
	readYAML(t, filepath.Join("..", "config", "rbac", "metrics_auth_role.yaml"), &metricsAuth)
	for _, c := range []struct {
		what  string
		rules []rbacv1.PolicyRule
		want  []permission
	}{
		{"config/rbac/role.yaml", cr.Rules, operatorClusterPermissions},
		{"+kubebuilder:rbac markers", markerRules(t), operatorClusterPermissions},
		{"config/rbac/leader_election_role.yaml", role.Rules, operatorLeaderElectionPermissions},
		{"config/rbac/metrics_auth_role.yaml", metricsAuth.Rules, operatorMetricsAuthPermissions},
	} {
		extra, missing := diffGrants(rulesGrants(t, c.what, c.rules), grantsOf(c.want))
		if len(extra) > 0 {
			t.Errorf("%s grants more than the documented permissions (operatorClusterPermissions): %s", c.what, strings.Join(extra, ", "))
		}
		if len(missing) > 0 {
			t.Errorf("%s lacks documented permissions: %s", c.what, strings.Join(missing, ", "))
		}
	}
	// Every binding in config/rbac binds one of these roles (or the
	// kubebuilder helper roles, which no ServiceAccount of ours holds).
	entries, err := os.ReadDir(filepath.Join("..", "config", "rbac"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), "_binding.yaml") {
			continue
		}
		var b rbacv1.RoleBinding
		readYAML(t, filepath.Join("..", "config", "rbac", e.Name()), &b)
		if b.RoleRef.Name != cr.Name && b.RoleRef.Name != role.Name && b.RoleRef.Name != metricsAuth.Name {
			t.Errorf("%s binds %s %s, which this test does not pin", e.Name(), b.RoleRef.Kind, b.RoleRef.Name)
		}
	}
}

// sensitiveResources are resources (group, resource[/subresource]) an
// operator could be given by mistake; TestOperatorHasNoMoreThanAllowed
// asks for every verb on each, besides everything the allow-lists name.
var sensitiveResources = [][2]string{
	{"", "pods"}, {"", "pods/exec"}, {"", "pods/attach"}, {"", "pods/portforward"}, {"", "pods/eviction"},
	{"", "pods/log"}, {"", "pods/status"}, {"", "secrets"}, {"", "configmaps"}, {"", "services"}, {"", "services/proxy"},
	{"", "endpoints"}, {"", "persistentvolumeclaims"}, {"", "persistentvolumes"}, {"", "nodes"}, {"", "nodes/proxy"},
	{"", "namespaces"}, {"", "serviceaccounts"}, {"", "serviceaccounts/token"}, {"", "users"}, {"", "groups"},
	{"", "events"}, {"", "resourcequotas"},
	{"apps", "statefulsets"}, {"apps", "statefulsets/scale"}, {"apps", "deployments"}, {"apps", "daemonsets"},
	{"batch", "jobs"}, {"batch", "cronjobs"}, {"policy", "poddisruptionbudgets"},
	{"rbac.authorization.k8s.io", "roles"}, {"rbac.authorization.k8s.io", "rolebindings"},
	{"rbac.authorization.k8s.io", "clusterroles"}, {"rbac.authorization.k8s.io", "clusterrolebindings"},
	{"apiextensions.k8s.io", "customresourcedefinitions"},
	{"admissionregistration.k8s.io", "mutatingwebhookconfigurations"},
	{"admissionregistration.k8s.io", "validatingwebhookconfigurations"},
	{"certificates.k8s.io", "certificatesigningrequests"},
	{"coordination.k8s.io", "leases"}, {"events.k8s.io", "events"},
	{"cache.diskcache.dev", "diskcaches"}, {"cache.diskcache.dev", "diskcaches/status"},
	{"cache.diskcache.dev", "diskcaches/finalizers"}, {"cache.diskcache.dev", "diskcaches/scale"},
}

var allVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
	"impersonate", "bind", "escalate", "approve"}

// TestOperatorHasNoMoreThanAllowed binds the shipped RBAC to a
// ServiceAccount and asks the API server (SubjectAccessReview) about every
// verb on every sensitive resource, in the operator's namespace, in
// another one and cluster-wide: the answer must be exactly what the
// allow-lists say (the leader election Role counting only in the
// operator's namespace).
func TestOperatorHasNoMoreThanAllowed(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	other := newNamespace(t)
	user := operatorIdentity(t, ns)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}

	cluster, leader := grantsOf(operatorClusterPermissions), grantsOf(operatorLeaderElectionPermissions)
	resources := map[[2]string]bool{}
	for _, r := range sensitiveResources {
		resources[r] = true
	}
	for g := range cluster {
		resources[[2]string{g.group, g.resource}] = true
	}
	for g := range leader {
		resources[[2]string{g.group, g.resource}] = true
	}

	type query struct {
		ns string
		g  grant
	}
	var queries []query
	for r := range resources {
		for _, v := range allVerbs {
			for _, n := range []string{ns, other, ""} {
				queries = append(queries, query{n, grant{r[0], r[1], v}})
			}
		}
	}
	var (
		mu    sync.Mutex
		wrong []string
		wg    sync.WaitGroup
		work  = make(chan query)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q := range work {
				resource, sub, _ := strings.Cut(q.g.resource, "/")
				sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User: user, Groups: groups,
					ResourceAttributes: &authorizationv1.ResourceAttributes{
						Namespace: q.ns, Verb: q.g.verb, Group: q.g.group, Resource: resource, Subresource: sub},
				}}
				if err := k8s.Create(bg, sar); err != nil {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s in %q: %v", q.g, q.ns, err))
					mu.Unlock()
					continue
				}
				want := cluster[q.g] || q.ns == ns && leader[q.g]
				if sar.Status.Allowed != want {
					where := "cluster-wide"
					if q.ns != "" {
						where = "in namespace " + q.ns
					}
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s %s: allowed=%v, want %v (%s)", q.g, where, sar.Status.Allowed, want, sar.Status.Reason))
					mu.Unlock()
				}
			}
		}()
	}
	for _, q := range queries {
		work <- q
	}
	close(work)
	wg.Wait()
	sort.Strings(wrong)
	for _, w := range wrong {
		t.Error(w)
	}
	t.Logf("%d access reviews as %s", len(queries), user)
}
