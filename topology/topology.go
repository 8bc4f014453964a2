package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
)

// Layout is what an announcement sets: an epoch and the base URL of every
// shard, in ordinal order. It is the body of PUT /v1/topology (with
// Previous) and the content of the operator's topology ConfigMap.
type Layout struct {
	Epoch  int64    `json:"epoch"`
	Shards []string `json:"shards"`
}

// Announcement is a layout together with the one it replaces, while data
// may still sit at the previous owners (null once a move has ended).
type Announcement struct {
	Layout
	Previous *Layout `json:"previous"`
}

// Topology is a server's view: the announcement it follows, which shard it
// is, and how far it is in moving data it no longer owns.
type Topology struct {
	Announcement
	// Self is the server's shard index; outside [0, len(Shards)) it owns
	// nothing and forwards everything.
	Self        int      `json:"self"`
	Rebalancing bool     `json:"rebalancing"`
	Progress    Progress `json:"progress"`
}

// Progress is a shard's handoff in its last move. A shard that ran none
// since it started reports {} (Epoch 0). A shard keeps reporting its last
// move until the first pass of the next one, so a reader compares Epoch
// with the move it waits for.
type Progress struct {
	Epoch            int64 `json:"epoch"`
	ItemsMoved       int64 `json:"items_moved"`
	BytesMoved       int64 `json:"bytes_moved"`
	ItemsRemaining   int64 `json:"items_remaining"` // counted when a pass starts, lowered as batches are acknowledged
	BytesRemaining   int64 `json:"bytes_remaining"`
	CollectionsMoved int64 `json:"collections_moved"`
	ItemsReceived    int64 `json:"items_received"` // imported from other shards, pushed or pulled
	Passes           int64 `json:"passes"`
	// Started and Finished are RFC 3339 times; LastError says why the last
	// pass stopped early (it is retried).
	Started   string `json:"started,omitempty"`
	Finished  string `json:"finished,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// MarshalJSON writes {} for no move, as the shards always have.
func (p Progress) MarshalJSON() ([]byte, error) {
	if p == (Progress{}) {
		return []byte("{}"), nil
	}
	type plain Progress // without this method
	return json.Marshal(plain(p))
}

// Validate checks an announcement: an epoch from 1 to MaxEpoch, at least one shard,
// absolute http(s) URLs without a path beyond "/", no duplicates, and a
// previous layout (when there is one) that is older.
func (a Announcement) Validate() error {
	if err := a.Layout.validate(); err != nil {
		return err
	}
	if a.Previous != nil {
		if err := a.Previous.validate(); err != nil {
			return fmt.Errorf("previous: %w", err)
		}
		if a.Previous.Epoch >= a.Epoch {
			return fmt.Errorf("previous epoch %d is not older than epoch %d", a.Previous.Epoch, a.Epoch)
		}
	}
	return nil
}

// MaxEpoch is the largest epoch: exact as a JSON number in every language
// (2^53 - 1), and far enough from int64's end that an announcement made
// by mistake with a huge epoch cannot leave no newer one possible.
const MaxEpoch = 1<<53 - 1

func (l Layout) validate() error {
	if l.Epoch < 1 || l.Epoch > MaxEpoch {
		return fmt.Errorf("epoch %d: must be from 1 to %d", l.Epoch, int64(MaxEpoch))
	}
	if len(l.Shards) == 0 {
		return errors.New("no shards")
	}
	seen := make(map[string]bool, len(l.Shards))
	for i, s := range l.Shards {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("shard %d: %q is not an http(s) base URL", i, s)
		}
		if seen[s] {
			return fmt.Errorf("shard %d: %q is listed twice", i, s)
		}
		seen[s] = true
	}
	return nil
}

// Equal reports whether two layouts are the same epoch and shard list.
func (l Layout) Equal(o Layout) bool { return l.Epoch == o.Epoch && slices.Equal(l.Shards, o.Shards) }

// Equal reports whether two announcements set the same layouts.
func (a Announcement) Equal(o Announcement) bool {
	if !a.Layout.Equal(o.Layout) || (a.Previous == nil) != (o.Previous == nil) {
		return false
	}
	return a.Previous == nil || a.Previous.Equal(*o.Previous)
}

// Owns reports whether shard self owns the routing bytes under this layout.
func (l Layout) Owns(self int, routing []byte) bool { return Owner(routing, len(l.Shards)) == self }
