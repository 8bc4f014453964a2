//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
)

// TestTokenRotationUnderLoad rotates the token of a two-shard cache with
// kubectl annotate while a client drives load through the Service, and
// counts the failed requests: there must be none. The client reads its
// token from a file that the test keeps in step with the Secret, as the
// kubelet keeps a mounted one; the pods get theirs from the kubelet.
func TestTokenRotationUnderLoad(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "rotate")
	const name = "rotate"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 2
		dc.Spec.Auth.RotationGracePeriod = &metav1.Duration{Duration: 20 * time.Second}
	}))
	waitAvailable(t, ns, name, 4*time.Minute)
	waitTopologyAnnounced(t, ns, name, 2)
	tokA := token(t, ns, name)

	// The application's mounted token file.
	file := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string) {
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Error(err)
		}
	}
	writeToken(tokA)
	start := time.Now()
	mirrorCtx, stopMirror := context.WithCancel(context.Background())
	mirrored := make(chan struct{})
	go func() {
		defer close(mirrored)
		last := tokA
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-mirrorCtx.Done():
				return
			case <-tick.C:
			}
			var s corev1.Secret
			if err := k8s.Get(mirrorCtx, ctrlclient.ObjectKey{Namespace: ns, Name: name + "-token"}, &s); err != nil {
				continue
			}
			if tok := string(s.Data[cachev1alpha1.TokenKey]); tok != "" && tok != last {
				writeToken(tok)
				last = tok
				t.Logf("after %s the application's token file has the new token", time.Since(start).Round(time.Second))
			}
		}
	}()
	defer func() { stopMirror(); <-mirrored }()

	c, err := cacheclient.New(serviceURL(t, ns, name), cacheclient.Options{TokenFile: file, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	l := loadcheck.New(cacheStore{c.Cache("")}, loadcheck.Config{Workers: 2, KeysPerWorker: 100, Prefix: "rotate"})
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.Run(ctxT(t, 15*time.Minute), stop)
	}()

	p.next("rotate under load")
	if out, err := kubectl(t, "-n", ns, "annotate", "dcache/"+name, cachev1alpha1.RotateTokenAnnotation+"=1", "--overwrite"); err != nil {
		t.Fatalf("kubectl annotate: %v\n%s", err, out)
	}
	phase := ""
	eventually(t, 8*time.Minute, "the rotation done", func(context.Context) (bool, string) {
		st := getDiskCache(t, ns, name).Status.Auth
		if st != nil && st.Rotation != phase {
			t.Logf("after %s status.auth.rotation %q (%d shards accept the new token)", time.Since(start).Round(time.Second), st.Rotation, st.ShardsAcceptingNext)
			phase = st.Rotation
		}
		return st != nil && st.Rotation == "" && st.LastRotationTime != nil && st.LastTrigger == "1", fmt.Sprintf("status.auth %+v", st)
	})
	tokB := token(t, ns, name)
	if tokB == tokA {
		t.Fatal("the rotation kept the old token")
	}
	// The pods refuse the old token once the kubelet has updated them:
	// the load ran through the whole rotation.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for i := range 2 {
		pod := cachePod(t, ns, name, i)
		eventually(t, 4*time.Minute, pod.Name+" refuses the old token", func(ctx context.Context) (bool, string) {
			codes := map[string]int{}
			for what, tok := range map[string]string{"old": tokA, "new": tokB} {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, podURL(pod)+"/v1/info", nil)
				if err != nil {
					return false, err.Error()
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := hc.Do(req)
				if err != nil {
					return false, err.Error()
				}
				resp.Body.Close()
				codes[what] = resp.StatusCode
			}
			return codes["old"] == http.StatusUnauthorized && codes["new"] == http.StatusOK, fmt.Sprint(codes)
		})
	}
	t.Logf("after %s both pods refuse the old token", time.Since(start).Round(time.Second))
	close(stop)
	<-loadDone

	p.next("verify")
	counts, err := l.Verify(ctxT(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Logf("load through the Service during the rotation: %v", counts)
	if counts.Errors != 0 || !counts.Safe() || counts.Sets == 0 || counts.Reads == 0 {
		t.Errorf("%d failed requests during the rotation (%v); last: %v", counts.Errors, counts, l.LastError())
	}
	var reasons []string
	for _, e := range eventsOf(t, ns, name) {
		if strings.HasPrefix(e.Reason, "Token") {
			reasons = append(reasons, e.Reason+": "+e.Note)
		}
	}
	t.Logf("rotation events:\n%s", strings.Join(reasons, "\n"))
}

// eventsOf lists the Events about DiskCache name.
func eventsOf(t *testing.T, ns, name string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(ctxT(t, 30*time.Second), &list, ctrlclient.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "DiskCache" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}
