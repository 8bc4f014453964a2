package topology

import (
	"encoding/json"
	"math"
	"testing"
)

// TestProgressJSON: the progress of GET /v1/topology is {} when no move ran
// and every figure otherwise (zeros included), and reads back the same.
func TestProgressJSON(t *testing.T) {
	for _, tc := range []struct {
		p    Progress
		want string
	}{
		{Progress{}, `{}`},
		{Progress{Epoch: 3, ItemsRemaining: 2, Started: "2026-12-05T00:00:00Z"},
			`{"epoch":3,"items_moved":0,"bytes_moved":0,"items_remaining":2,"bytes_remaining":0,"collections_moved":0,"items_received":0,"passes":0,"started":"2026-12-05T00:00:00Z"}`},
	} {
		b, err := json.Marshal(Topology{Progress: tc.p})
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Progress json.RawMessage `json:"progress"`
		}
		if err := json.Unmarshal(b, &doc); err != nil || string(doc.Progress) != tc.want {
			t.Errorf("progress %+v: %s (%v), want %s", tc.p, doc.Progress, err, tc.want)
		}
		var back Topology
		if err := json.Unmarshal(b, &back); err != nil || back.Progress != tc.p {
			t.Errorf("progress %+v read back as %+v (%v)", tc.p, back.Progress, err)
		}
	}
}

func TestAnnouncementEpochBounds(t *testing.T) {
	for _, tc := range []struct {
		epoch int64
		ok    bool
	}{{0, false}, {-1, false}, {1, true}, {MaxEpoch, true}, {MaxEpoch + 1, false}, {math.MaxInt64, false}} {
		a := Announcement{Layout: Layout{Epoch: tc.epoch, Shards: []string{"http://a:1"}}}
		if err := a.Validate(); (err == nil) != tc.ok {
			t.Errorf("epoch %d: %v, want ok=%v", tc.epoch, err, tc.ok)
		}
	}
}
