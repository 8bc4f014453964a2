package cacheserver_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestPauseLeaseBounds: the rebalance pause's lease is seconds in
// (0, 300]; NaN is refused too (it passed both comparisons before).
func TestPauseLeaseBounds(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	url := c.Shards[0].URL + "/v1/rebalance/"
	for _, lease := range []string{"NaN", "nan", "0", "-1", "301", "inf", "x"} {
		if st, _, b := do(t, "POST", url+"pause?lease="+lease, c.AdminToken, nil, nil); st != http.StatusBadRequest {
			t.Errorf("pause?lease=%s = %d %s, want 400", lease, st, b)
		}
	}
	if st, _, b := do(t, "POST", url+"pause?lease=2.5", c.AdminToken, nil, nil); st != http.StatusOK || !strings.Contains(string(b), `"lease":2.5`) {
		t.Fatalf("pause?lease=2.5 = %d %s", st, b)
	}
	if st, _, b := do(t, "POST", url+"resume", c.AdminToken, nil, nil); st != http.StatusOK {
		t.Fatalf("resume = %d %s", st, b)
	}
}
