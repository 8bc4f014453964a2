package controllers

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// projectSecret writes the keys of data into dir as the kubelet projects
// a mounted Secret: in a new timestamped directory that a "..data" symlink
// swap makes current at once, with a symlink per key through "..data".
func projectSecret(t *testing.T, dir string, data map[string][]byte) {
	t.Helper()
	ts := fmt.Sprintf("..%d", time.Now().UnixNano())
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, ts, k), v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{cachev1alpha1.TokenKey, cachev1alpha1.TokenNextKey, cachev1alpha1.TokenPreviousKey} {
		link := filepath.Join(dir, k)
		_, has := data[k]
		_, err := os.Lstat(link)
		switch {
		case err == nil && !has:
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
		case err != nil && has:
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
}

func tokenSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	return get(t, ns, name+"-token", &corev1.Secret{})
}

// TestTokenSecretKeysAreTheServersFiles: the keys of a rotation are the
// file names the server reads beside its token file.
func TestTokenSecretKeysAreTheServersFiles(t *testing.T) {
	if cachev1alpha1.TokenNextKey != cachev1alpha1.TokenKey+wire.TokenNextSuffix ||
		cachev1alpha1.TokenPreviousKey != cachev1alpha1.TokenKey+wire.TokenPreviousSuffix {
		t.Fatalf("Secret keys %q, %q; the server reads %q and %q", cachev1alpha1.TokenNextKey, cachev1alpha1.TokenPreviousKey,
			cachev1alpha1.TokenKey+wire.TokenNextSuffix, cachev1alpha1.TokenKey+wire.TokenPreviousSuffix)
	}
}

// TestTokenRotation drives a token rotation against two real cacheservers
// whose token files the test updates from the Secret as the kubelet would,
// each in its own time: the operator puts a new token in token.next, makes
// it current only once both shards accept it, keeps the old one accepted
// for the grace period, then retires it. A client reading the Secret's
// file, and one still holding the old token during the grace period, get
// no error at any step, also through a shard that forwards to the other.
func TestTokenRotation(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name = "rot"
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 2
		dc.Spec.Auth.RotationGracePeriod = &metav1.Duration{Duration: time.Hour}
	})
	tokA := waitToken(t, ns, name)
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(waitAdminToken(t, ns, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs := []string{t.TempDir(), t.TempDir()}
	kubelet := func(i int) { projectSecret(t, dirs[i], tokenSecret(t, ns, name).Data) }
	var servers []*testserver.Server
	for i := range dirs {
		kubelet(i)
		pod := fmt.Sprintf("%s-%d", name, i)
		srv := testserver.Start(t, testserver.Options{Token: tokA, TokenFile: filepath.Join(dirs[i], "token"),
			Args: []string{"--shard-index", strconv.Itoa(i), "--admin-token-file", adminFile}})
		servers = append(servers, srv)
		podAddrs.Store(ns+"/"+pod, srv.URL)
		t.Cleanup(func() { podAddrs.Delete(ns + "/" + pod) })
		createPod(t, ns, name, pod, true)
	}
	for _, srv := range servers {
		eventually(t, "topology announced to "+srv.URL, func() error {
			topo, err := shardClient(t, srv.URL, tokA).Topology(bg)
			if err != nil {
				return err
			}
			return want(topo.Epoch > 0 && len(topo.Shards) == 2, "topology %+v", topo)
		})
	}

	// The application: reads the Secret's file, through shard 0, which
	// forwards the keys of shard 1.
	appDir := t.TempDir()
	projectSecret(t, appDir, tokenSecret(t, ns, name).Data)
	app, err := cacheclient.New(servers[0].URL, cacheclient.Options{TokenFile: filepath.Join(appDir, "token"), DirectOnly: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	old, err := cacheclient.New(servers[1].URL, cacheclient.Options{Token: tokA, DirectOnly: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	use := func(step string, c *cacheclient.Client) {
		t.Helper()
		for i := range 10 {
			writes++
			if err := c.Cache("").Set(bg, kv.TextKey(fmt.Sprint("k", i)), kv.Int(int64(writes)), kv.SetOptions{}); err != nil {
				t.Fatalf("%s: Set k%d: %v", step, i, err)
			}
		}
	}
	use("before the rotation", app)
	status := func() *cachev1alpha1.AuthStatus {
		return get(t, ns, name, &cachev1alpha1.DiskCache{}).Status.Auth
	}

	// 1. The annotation: a new token in token.next, the current one kept.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{cachev1alpha1.RotateTokenAnnotation: "1"}
	})
	var tokB string
	eventually(t, "the new token in token.next", func() error {
		s := tokenSecret(t, ns, name)
		tokB = string(s.Data[cachev1alpha1.TokenNextKey])
		st := status()
		return want(tokB != "" && tokB != tokA && string(s.Data[cachev1alpha1.TokenKey]) == tokA &&
			st != nil && st.Rotation == cachev1alpha1.RotationPropagating && st.LastTrigger == "1",
			"Secret %v, status.auth %+v", keysOf(s), st)
	})

	// 2. One shard has it: the operator waits for the other.
	kubelet(0)
	eventually(t, "one shard accepts the new token", func() error {
		st := status()
		return want(st != nil && st.ShardsAcceptingNext == 1 && slices.Equal(st.WaitingFor, []string{name + "-1"}), "status.auth %+v", st)
	})
	if s := tokenSecret(t, ns, name); string(s.Data[cachev1alpha1.TokenKey]) != tokA {
		t.Fatalf("the new token became current while shard 1 did not accept it: Secret %v", keysOf(s))
	}
	use("one shard accepts the next token", app)
	kubelet(1)
	eventually(t, "the new token current, the old one previous", func() error {
		s := tokenSecret(t, ns, name)
		st := status()
		return want(string(s.Data[cachev1alpha1.TokenKey]) == tokB && string(s.Data[cachev1alpha1.TokenPreviousKey]) == tokA &&
			s.Data[cachev1alpha1.TokenNextKey] == nil && st != nil && st.Rotation == cachev1alpha1.RotationRetiring &&
			st.RetireTime != nil && st.RetireTime.Time.After(time.Now().Add(50*time.Minute)),
			"Secret %v, status.auth %+v", keysOf(s), st)
	})

	// Another rotation asked for meanwhile is said to wait for this one.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{cachev1alpha1.RotateTokenAnnotation: "2"}
	})
	eventually(t, "the second rotation is queued", func() error {
		return findEventNote(t, ns, name, cachev1alpha1.ReasonTokenRotationQueued, `rotate-token "2"`)
	})
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{cachev1alpha1.RotateTokenAnnotation: "1"}
	})

	// The application gets the new token before the shards' files change
	// (shard 0 forwards it to shard 1, which accepts it as next); one that
	// still holds the old token keeps working for the grace period.
	projectSecret(t, appDir, tokenSecret(t, ns, name).Data)
	use("the application has the new token, the shards' files do not", app)
	kubelet(0)
	kubelet(1)
	use("the application has the new token", app)
	use("a client with the old token in the grace period", old)

	// 3. The grace period ends: the old token is retired.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Auth.RotationGracePeriod = &metav1.Duration{Duration: time.Second}
	})
	eventually(t, "a warning about the short grace period", func() error {
		return findEventNote(t, ns, name, cachev1alpha1.ReasonRotationGracePeriodShort, "rotationGracePeriod 1s")
	})
	eventually(t, "the old token retired", func() error {
		s := tokenSecret(t, ns, name)
		st := status()
		return want(s.Data[cachev1alpha1.TokenPreviousKey] == nil && string(s.Data[cachev1alpha1.TokenKey]) == tokB &&
			st != nil && st.Rotation == "" && st.LastRotationTime != nil && st.LastTrigger == "1",
			"Secret %v, status.auth %+v", keysOf(s), st)
	})
	kubelet(0)
	kubelet(1)
	for i, srv := range servers {
		eventually(t, fmt.Sprintf("shard %d refuses the old token", i), func() error {
			got := statusOf(t, srv.URL+"/v1/info", tokA)
			return want(got == http.StatusUnauthorized, "old token: %d", got)
		})
	}
	use("after the rotation", app)

	// The operator's own calls use the new token: a live setting reaches
	// both shards; and the same annotation does not rotate again.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.CullLimit = ptrTo[int32](7) })
	for _, srv := range servers {
		srv.Token = tokB
		eventually(t, "cull_limit 7 on "+srv.URL, func() error {
			got := serverSettings(t, srv)["cull_limit"]
			return want(got == float64(7), "cull_limit %v", got)
		})
	}
	if s := tokenSecret(t, ns, name); s.Data[cachev1alpha1.TokenNextKey] != nil || string(s.Data[cachev1alpha1.TokenKey]) != tokB {
		t.Errorf("after the rotation, the same annotation rotated again: Secret %v", keysOf(s))
	}
	reasons := map[string]int{}
	for _, e := range eventsFor(t, ns, name) {
		reasons[e.Reason]++
		if strings.Contains(e.Note, tokA) || strings.Contains(e.Note, tokB) {
			t.Errorf("an event carries a token: %s", e.Note)
		}
	}
	for _, r := range []string{cachev1alpha1.ReasonTokenRotationStarted, cachev1alpha1.ReasonTokenSwitched, cachev1alpha1.ReasonTokenRotated} {
		if reasons[r] != 1 {
			t.Errorf("%d %s events, want 1 (events %v)", reasons[r], r, reasons)
		}
	}
}

func keysOf(s *corev1.Secret) []string {
	var out []string
	for k, v := range s.Data {
		out = append(out, fmt.Sprintf("%s(%d)", k, len(v)))
	}
	return out
}

// statusOf is the status of a GET of url with token.
func statusOf(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestQuarantineRaisesEvent: a shard that started over a damaged fanout
// database (a real cacheserver, which set it aside) makes the operator
// raise one Warning Event naming the pod and the database, and only one
// however often it reconciles.
func TestQuarantineRaisesEvent(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name = "quar"
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	tok := waitToken(t, ns, name)

	// A cache directory whose fanout database 002 has garbage pages.
	data := filepath.Join(t.TempDir(), "data")
	first := testserver.Start(t, testserver.Options{Token: tok, DataDir: data, Args: []string{"--fanout", "4"}})
	c := shardClient(t, first.URL, tok)
	for i := range 50 {
		if err := c.Cache("").Set(bg, kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Stop(bg); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(data, "002", "cache.db")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(b); i++ {
		b[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(db, b, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, pod := serveShard0(t, ns, name, tok, data)

	quarantineEvents := func() []string {
		return eventNotes(t, ns, name, corev1.EventTypeWarning, cachev1alpha1.ReasonDatabaseQuarantined)
	}
	eventually(t, "a DatabaseQuarantined event", func() error {
		notes := quarantineEvents()
		return want(len(notes) == 1 && strings.Contains(notes[0], "pod "+pod) && strings.Contains(notes[0], "fanout database 2 "),
			"events %q", notes)
	})
	// More reconciles (each reads GET /v1/config again) raise no more.
	for n := int32(1); n <= 3; n++ {
		updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.CullLimit = ptrTo(n) })
		eventually(t, fmt.Sprintf("cull_limit %d applied", n), func() error {
			got := serverSettings(t, srv)["cull_limit"]
			return want(got == float64(n), "cull_limit %v", got)
		})
	}
	if notes := quarantineEvents(); len(notes) != 1 || strings.Contains(notes[0], "series") {
		t.Errorf("quarantine events after more reconciles: %q, want one", notes)
	}
}

// TestPageSizeKeptRaisesEvent: a shard whose databases were created with
// another page size than it runs with gets one Normal Event saying so.
func TestPageSizeKeptRaisesEvent(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name = "pages"
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	tok := waitToken(t, ns, name)

	data := filepath.Join(t.TempDir(), "data")
	first := testserver.Start(t, testserver.Options{Token: tok, DataDir: data, Args: []string{"--fanout", "4", "--page-size", "4096"}})
	if err := first.Stop(bg); err != nil {
		t.Fatal(err)
	}
	srv, pod := serveShard0(t, ns, name, tok, data)

	pageEvents := func() []string {
		return eventNotes(t, ns, name, corev1.EventTypeNormal, cachev1alpha1.ReasonPageSizeKept)
	}
	wantNote := "pod " + pod + ": of its 4 fanout databases, 4 with pages of 4096 bytes keep the page size they were created with; " +
		"pages of 2048 bytes (spec.pageSize) go to databases created from now on"
	eventually(t, "a PageSizeKept event", func() error {
		notes := pageEvents()
		return want(len(notes) == 1 && notes[0] == wantNote, "events %q, want %q", notes, wantNote)
	})
	// More reconciles (each reads GET /v1/config again) raise no more.
	for n := int32(1); n <= 2; n++ {
		updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.CullLimit = ptrTo(n) })
		eventually(t, fmt.Sprintf("cull_limit %d applied", n), func() error {
			got := serverSettings(t, srv)["cull_limit"]
			return want(got == float64(n), "cull_limit %v", got)
		})
	}
	if notes := pageEvents(); len(notes) != 1 || notes[0] != wantNote {
		t.Errorf("PageSizeKept events after more reconciles: %q, want one", notes)
	}
}

// serveShard0 starts a server on data as shard 0 (fanout 4) of DiskCache
// name, with its admin token, and makes it the operator's ready pod NAME-0.
func serveShard0(t *testing.T, ns, name, tok, data string) (*testserver.Server, string) {
	t.Helper()
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(waitAdminToken(t, ns, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{Token: tok, DataDir: data,
		Args: []string{"--fanout", "4", "--shard-index", "0", "--admin-token-file", adminFile}})
	pod := name + "-0"
	podAddrs.Store(ns+"/"+pod, srv.URL)
	t.Cleanup(func() { podAddrs.Delete(ns + "/" + pod) })
	createPod(t, ns, name, pod, true)
	return srv, pod
}

// eventNotes lists the notes of DiskCache name's events of one type and
// reason, each followed by its series count when it is a series.
func eventNotes(t *testing.T, ns, name, eventType, reason string) []string {
	t.Helper()
	var notes []string
	for _, e := range eventsFor(t, ns, name) {
		if e.Reason == reason && e.Type == eventType {
			n := e.Note
			if e.Series != nil {
				n += fmt.Sprintf(" (series of %d)", e.Series.Count)
			}
			notes = append(notes, n)
		}
	}
	return notes
}

// TestRotationTimeSurvivesALostStatusWrite: retiring the old token writes
// the Secret, then the status; when that status write is lost (the
// reconcile fails after the Secret's update, as under load), the next step
// still reports when the rotation ended, read from the Secret.
func TestRotationTimeSurvivesALostStatusWrite(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	switched := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "lost-token", Namespace: ns,
			Annotations: map[string]string{switchedAtAnnotation: switched}},
		Data: map[string][]byte{cachev1alpha1.TokenKey: []byte("new"), cachev1alpha1.TokenPreviousKey: []byte("old")},
	}
	if err := k8s.Create(bg, secret); err != nil {
		t.Fatal(err)
	}
	dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
		dc.Namespace = ns
		dc.Spec.Auth.RotationGracePeriod = &metav1.Duration{Duration: time.Minute}
	})
	r := &DiskCacheReconciler{Client: k8s, Scheme: testScheme}
	retired, err := r.rotationStep(bg, dc, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := retired.status; st == nil || st.Rotation != "" || st.LastRotationTime == nil {
		t.Fatalf("retiring step: status.auth %+v, want no rotation and a lastRotationTime", st)
	}
	// dc.Status.Auth is not updated: the status write was lost.
	if err := k8s.Get(bg, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	if _, ok := secret.Data[cachev1alpha1.TokenPreviousKey]; ok {
		t.Fatal("the old token is still in the Secret")
	}
	next, err := r.rotationStep(bg, dc, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := next.status; st == nil || st.LastRotationTime == nil || !st.LastRotationTime.Equal(retired.status.LastRotationTime) {
		t.Fatalf("step after a lost status write: status.auth %+v, want lastRotationTime %v", st, retired.status.LastRotationTime)
	}
}

// TestRotationInAUserSecretShows: with spec.auth.secretName the operator
// does not watch the Secret (its cache holds only the Secrets it owns), yet a
// token.next the user adds shows as a rotation Propagating in status.auth,
// as docs/operations.md tells the user to wait for. It stayed empty until
// something else touched the DiskCache.
func TestRotationInAUserSecretShows(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}, Data: map[string][]byte{cachev1alpha1.TokenKey: []byte("old-token-value")}}
	if err := k8s.Create(bg, sec); err != nil {
		t.Fatal(err)
	}
	newDiskCache(t, ns, "own", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Auth.SecretName = "mine"
		dc.Spec.Maintenance.Schedule = "0 0 1 1 *" // no run requeues it meanwhile
	})
	eventually(t, "reconciled", func() error {
		dc := get(t, ns, "own", &cachev1alpha1.DiskCache{})
		return want(dc.Status.ObservedGeneration == dc.Generation, "generation %d observed, want %d", dc.Status.ObservedGeneration, dc.Generation)
	})
	sec = get(t, ns, "mine", &corev1.Secret{})
	sec.Data[cachev1alpha1.TokenNextKey] = []byte("new-token-value")
	if err := k8s.Update(bg, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rotation Propagating in status.auth", func() error {
		dc := get(t, ns, "own", &cachev1alpha1.DiskCache{})
		return want(dc.Status.Auth != nil && dc.Status.Auth.Rotation == cachev1alpha1.RotationPropagating, "status.auth %+v", dc.Status.Auth)
	})
}

// TestTokenChangedInPlaceWarns: a user who replaces the token of their
// Secret in place (no token.next first) is told which pods refuse it.
func TestTokenChangedInPlaceWarns(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}, Data: map[string][]byte{cachev1alpha1.TokenKey: []byte("first-token")}}
	if err := k8s.Create(bg, sec); err != nil {
		t.Fatal(err)
	}
	newDiskCache(t, ns, "inplace", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Auth.SecretName = "mine" })
	startShards(t, ns, "inplace", 2, "first-token") // their token files keep the first token
	eventually(t, "reconciled with the shards", func() error {
		dc := get(t, ns, "inplace", &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, "")
	})
	if err := findEventNote(t, ns, "inplace", cachev1alpha1.ReasonTokenNotAccepted, ""); err == nil {
		t.Fatal("a TokenNotAccepted Warning while every pod accepts the token")
	}
	sec = get(t, ns, "mine", &corev1.Secret{})
	sec.Data[cachev1alpha1.TokenKey] = []byte("second-token")
	if err := k8s.Update(bg, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a Warning naming the pods", func() error {
		return findEventNote(t, ns, "inplace", cachev1alpha1.ReasonTokenNotAccepted, "pods inplace-0, inplace-1 do not accept the token in Secret mine")
	})
}
