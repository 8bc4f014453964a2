package engine

// Coordination recipes: python-diskcache's recipes.py (Lock, RLock,
// BoundedSemaphore, Averager, throttle) as operations that each run in one
// write transaction, so they are atomic across goroutines and across
// processes sharing the cache directory. None of them waits: an acquisition
// that cannot succeed now reports who holds what and for how long, and the
// caller (the HTTP layer) decides how long to wait before trying again.
//
// Every recipe keeps its state in an ordinary cache item under the caller's
// key, as python-diskcache's recipes do, so the state expires, is tagged,
// counted, listed and removed like any other item. Python pickles are opaque
// to Go, so Go-side state is a text (str) value holding JSON, which
// python-diskcache reads as a str and json.loads can decode:
//
//	Lock              {"owner":"<owner>"}                  expiry: the item's expire_time
//	RLock             {"owner":"<owner>","count":<depth>}  expiry: the item's expire_time
//	BoundedSemaphore  {"value":<N>,"holders":{"<owner>":{"count":<permits>,"expire":<epoch seconds>}}}
//	                  ("expire" absent: the holder's permits never expire;
//	                  the item expires with the last expiring holder)
//	Averager          [<total>,<count>]                    python's (total, count) tuple
//	Throttler         {"tally":<tokens>,"last":<unix nanoseconds>}
//	                  (the item expires when the bucket would be full again)
//
// Because the state is an ordinary item, culling can remove it like any
// other: a lock in a cache that is over its size_limit under an eviction
// policy other than "none" may be evicted, exactly as with python-diskcache's
// recipes. Keep coordination keys in a cache (or sub-cache) with policy
// "none" or ample room.
//
// Reads (Locked, Holders, Averager.Get) run in a write transaction too, so
// they see the state at one instant of the cache's clock; a poller that must
// stay off the write lock can watch the key with Cache.Contains instead. The
// recipes read their state with Tx.Get, so with statistics on every call
// counts a hit or a miss, as the get calls of python's recipes do.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Transactor is what the recipes need of a cache: one atomic write
// transaction. *Cache implements it; with a FanoutCache, use the Cache of
// the database that holds the key, FanoutCache.DatabaseFor(key) (its short
// timeout then surfaces as ErrTimeout: the recipes swallow nothing).
type Transactor interface {
	Transact(ctx context.Context, fn func(tx *Tx) error) error
}

var _ Transactor = (*Cache)(nil)

// Lock is a non-reentrant lock with an owner token and an expiry: python's
// Lock recipe (an item added under the key, with expire) plus owners. It
// is held while a live item is under its key; the item holds
// {"owner":"<owner>"}. Any other live value under the key (python's Lock
// stores None) counts as the lock held by an unknown holder (reported as
// ""), so Go and python-diskcache Locks on one key exclude each other, and
// python's Lock.locked() sees a Go-held Lock as locked.
type Lock struct {
	// Cache holds the lock state.
	Cache Transactor
	// Tag is stored with the lock item; the zero Key stores none.
	Tag kv.Key
}

// Acquire takes the lock for owner if it is free or its holder's claim has
// expired, for ttl (zero: until released). It reports whether it did, the
// holder afterwards, and how long the holder's claim has left (0 when it
// never expires). Acquiring a lock owner already holds fails like any
// other acquisition (the lock is not reentrant; see RLock) and leaves its
// expiry alone, but reports owner as the holder.
func (l Lock) Acquire(ctx context.Context, key kv.Key, owner string, ttl time.Duration) (acquired bool, holder string, remaining time.Duration, err error) {
	if err := checkClaim(owner, ttl); err != nil {
		return false, "", 0, err
	}
	err = l.Cache.Transact(ctx, func(tx *Tx) error {
		cur, err := readLock(tx, key, false)
		if err != nil {
			return err
		}
		if cur.held {
			acquired, holder, remaining = false, cur.owner, cur.remaining
			return nil
		}
		if err := writeState(tx, key, lockState{Owner: owner}, ttlExpiry(ttl), l.Tag); err != nil {
			return err
		}
		acquired, holder, remaining = true, owner, ttl
		return nil
	})
	if err != nil {
		return false, "", 0, err
	}
	return acquired, holder, remaining, nil
}

// Release frees the lock held by owner. It fails with ErrNotOwner when the
// lock is not held, has expired, or is held by someone else.
func (l Lock) Release(ctx context.Context, key kv.Key, owner string) error {
	if err := checkOwner(owner); err != nil {
		return err
	}
	return l.Cache.Transact(ctx, func(tx *Tx) error {
		if _, err := ownLock(tx, key, owner, false, "release"); err != nil {
			return err
		}
		_, err := tx.Delete(key)
		return err
	})
}

// Refresh gives the lock held by owner a new ttl from now (zero: no expiry).
// It fails with ErrNotOwner when owner does not hold the lock.
func (l Lock) Refresh(ctx context.Context, key kv.Key, owner string, ttl time.Duration) error {
	if err := checkClaim(owner, ttl); err != nil {
		return err
	}
	return l.Cache.Transact(ctx, func(tx *Tx) error {
		if _, err := ownLock(tx, key, owner, false, "refresh"); err != nil {
			return err
		}
		_, err := tx.Touch(key, ttlExpiry(ttl))
		return err
	})
}

// Locked reports whether the lock is held, by whom ("" for an unknown
// holder) and how long the claim has left (0 when it never expires).
func (l Lock) Locked(ctx context.Context, key kv.Key) (locked bool, holder string, remaining time.Duration, err error) {
	err = l.Cache.Transact(ctx, func(tx *Tx) error {
		cur, err := readLock(tx, key, false)
		locked, holder, remaining = cur.held, cur.owner, cur.remaining
		return err
	})
	if err != nil {
		return false, "", 0, err
	}
	return locked, holder, remaining, nil
}

// RLock is a re-entrant lock: python's RLock recipe, with the caller's
// owner token in place of python's "pid-tid". The item under the key holds
// {"owner":"<owner>","count":<depth>} and its expiry is the expiry of the
// whole lock. Python's RLock keeps a pickled tuple instead, so the two do
// not share state: a Go RLock sees a python-held one as held by an unknown
// holder, but python's RLock cannot read a Go-held one.
type RLock struct {
	// Cache holds the lock state.
	Cache Transactor
	// Tag is stored with the lock item; the zero Key stores none.
	Tag kv.Key
}

// Acquire takes the lock for owner, or enters it once more when owner
// already holds it; either way the whole lock then expires ttl from now
// (zero: never). It reports whether it succeeded, the holder afterwards,
// the holder's depth (count) and how long the lock has left (0 when it
// never expires).
func (l RLock) Acquire(ctx context.Context, key kv.Key, owner string, ttl time.Duration) (acquired bool, holder string, count int, remaining time.Duration, err error) {
	if err := checkClaim(owner, ttl); err != nil {
		return false, "", 0, 0, err
	}
	err = l.Cache.Transact(ctx, func(tx *Tx) error {
		cur, err := readLock(tx, key, true)
		if err != nil {
			return err
		}
		if cur.held && cur.owner != owner {
			acquired, holder, count, remaining = false, cur.owner, cur.count, cur.remaining
			return nil
		}
		depth := cur.count + 1 // 0 when the lock is free
		if err := writeState(tx, key, lockState{Owner: owner, Count: &depth}, ttlExpiry(ttl), l.Tag); err != nil {
			return err
		}
		acquired, holder, count, remaining = true, owner, depth, ttl
		return nil
	})
	if err != nil {
		return false, "", 0, 0, err
	}
	return acquired, holder, count, remaining, nil
}

// Release leaves the lock once and returns owner's remaining depth; at 0
// the lock is free. The expiry is left as it was. It fails with ErrNotOwner
// when owner does not hold the lock.
func (l RLock) Release(ctx context.Context, key kv.Key, owner string) (count int, err error) {
	if err := checkOwner(owner); err != nil {
		return 0, err
	}
	err = l.Cache.Transact(ctx, func(tx *Tx) error {
		cur, err := ownLock(tx, key, owner, true, "release")
		if err != nil {
			return err
		}
		count = cur.count - 1
		if count == 0 {
			_, err = tx.Delete(key)
			return err
		}
		return writeState(tx, key, lockState{Owner: owner, Count: &count}, untilExpiry(cur.exp, tx.now()), l.Tag)
	})
	if err != nil {
		return 0, err
	}
	return count, nil
}

// Refresh gives the lock held by owner a new ttl from now (zero: no expiry)
// without changing its depth. It fails with ErrNotOwner when owner does not
// hold the lock.
func (l RLock) Refresh(ctx context.Context, key kv.Key, owner string, ttl time.Duration) error {
	if err := checkClaim(owner, ttl); err != nil {
		return err
	}
	return l.Cache.Transact(ctx, func(tx *Tx) error {
		if _, err := ownLock(tx, key, owner, true, "refresh"); err != nil {
			return err
		}
		_, err := tx.Touch(key, ttlExpiry(ttl))
		return err
	})
}

// Locked reports whether the lock is held, by whom ("" for an unknown
// holder), at what depth (0 for an unknown holder) and how long it has
// left (0 when it never expires).
func (l RLock) Locked(ctx context.Context, key kv.Key) (locked bool, holder string, count int, remaining time.Duration, err error) {
	err = l.Cache.Transact(ctx, func(tx *Tx) error {
		cur, err := readLock(tx, key, true)
		locked, holder, count, remaining = cur.held, cur.owner, cur.count, cur.remaining
		return err
	})
	if err != nil {
		return false, "", 0, 0, err
	}
	return locked, holder, count, remaining, nil
}

// lockState is the JSON of a Lock (Count absent) or an RLock.
type lockState struct {
	Owner string `json:"owner"`
	Count *int   `json:"count,omitempty"`
}

// heldLock is what readLock found under a lock's key.
type heldLock struct {
	held      bool          // a live item is under the key
	owner     string        // its owner; "" when the value is not this kind of lock
	count     int           // RLock depth; 0 for a Lock or a foreign value
	exp       float64       // absolute expire time; 0 for none
	remaining time.Duration // until exp; 0 for none
}

// readLock reads the lock under key; reentrant selects RLock's format.
func readLock(tx *Tx, key kv.Key, reentrant bool) (heldLock, error) {
	it, ok, err := tx.Get(key, GetOptions{})
	if err != nil || !ok {
		return heldLock{}, err
	}
	now := tx.now()
	h := heldLock{held: true, exp: it.ExpireTime, remaining: remainingUntil(it.ExpireTime, now)}
	var st lockState
	if it.Value.Type == kv.ValueText && json.Unmarshal(it.Value.Data, &st) == nil && st.Owner != "" {
		switch {
		case !reentrant && st.Count == nil:
			h.owner = st.Owner
		case reentrant && st.Count != nil && *st.Count >= 1:
			h.owner, h.count = st.Owner, *st.Count
		}
	}
	return h, nil
}

// ownLock reads the lock under key and fails with ErrNotOwner unless owner
// holds it.
func ownLock(tx *Tx, key kv.Key, owner string, reentrant bool, op string) (heldLock, error) {
	cur, err := readLock(tx, key, reentrant)
	if err != nil {
		return cur, err
	}
	switch {
	case !cur.held:
		return cur, fmt.Errorf("engine: %s lock %s: %w: %q does not hold it, the lock is free", op, key, kv.ErrNotOwner, owner)
	case cur.owner == "":
		return cur, fmt.Errorf("engine: %s lock %s: %w: %q does not hold it, an unknown holder does", op, key, kv.ErrNotOwner, owner)
	case cur.owner != owner:
		return cur, fmt.Errorf("engine: %s lock %s: %w: %q does not hold it, %q does", op, key, kv.ErrNotOwner, owner, cur.owner)
	}
	return cur, nil
}

// BoundedSemaphore hands out at most N permits at once, N given by each
// Acquire: python's BoundedSemaphore recipe with owners and per-owner
// expiry, so the permits of a holder that crashed come back when its claim
// expires. The item under the key holds
// {"value":N,"holders":{"<owner>":{"count":<permits>,"expire":<epoch seconds>}}}
// ("expire" absent when the holder's permits never expire); it expires with
// the last expiring holder and is deleted when the last permit is released.
// Python's BoundedSemaphore keeps a bare count instead; the two do not
// share state.
type BoundedSemaphore struct {
	// Cache holds the semaphore state.
	Cache Transactor
	// Tag is stored with the semaphore item; the zero Key stores none.
	Tag kv.Key
}

// semaphoreState is the JSON of a BoundedSemaphore.
type semaphoreState struct {
	Value   int                        `json:"value"`
	Holders map[string]semaphoreHolder `json:"holders"`
}

// semaphoreHolder is one owner's permits; Expire is in epoch seconds, 0 for
// never.
type semaphoreHolder struct {
	Count  int     `json:"count"`
	Expire float64 `json:"expire,omitempty"`
}

// Acquire takes one permit for owner when fewer than n permits are held
// (an owner may hold several); while anyone holds a permit, n is the value
// the first holder acquired with. All of owner's permits then expire ttl from
// now (zero: never). It reports whether it took one, how many permits are
// held afterwards, and, when it did not, how long until the soonest held
// permit expires (0 when none of them expires: wait for a release).
func (s BoundedSemaphore) Acquire(ctx context.Context, key kv.Key, owner string, n int, ttl time.Duration) (acquired bool, inUse int, wait time.Duration, err error) {
	if err := checkClaim(owner, ttl); err != nil {
		return false, 0, 0, err
	}
	if n < 1 {
		return false, 0, 0, fmt.Errorf("engine: semaphore %s: %w: value must be at least 1, got %d", key, kv.ErrInvalidValue, n)
	}
	err = s.Cache.Transact(ctx, func(tx *Tx) error {
		st, err := readSemaphore(tx, key)
		if err != nil {
			return err
		}
		now := tx.now()
		inUse = st.inUse()
		if inUse > 0 && st.Value > 0 {
			// Held: its value is the one it was taken with, not each
			// acquirer's (python-diskcache keeps the count left in the
			// cache, whatever value a later object was made with).
			n = st.Value
		}
		if inUse >= n {
			acquired, wait = false, st.soonestExpiry(now)
			return nil
		}
		h := st.Holders[owner]
		h.Count++
		h.Expire = 0
		if ttl > 0 {
			h.Expire = now + ttl.Seconds()
		}
		st.Holders[owner] = h
		st.Value = n
		acquired, inUse, wait = true, inUse+1, 0
		return st.write(tx, key, now, s.Tag)
	})
	if err != nil {
		return false, 0, 0, err
	}
	return acquired, inUse, wait, nil
}

// Release gives back one of owner's permits and returns how many permits
// are held afterwards. It fails with ErrOverRelease when owner holds none
// (never had one, released them all, or they expired).
func (s BoundedSemaphore) Release(ctx context.Context, key kv.Key, owner string) (inUse int, err error) {
	if err := checkOwner(owner); err != nil {
		return 0, err
	}
	err = s.Cache.Transact(ctx, func(tx *Tx) error {
		st, err := readSemaphore(tx, key)
		if err != nil {
			return err
		}
		h, ok := st.Holders[owner]
		if !ok {
			return fmt.Errorf("engine: release semaphore %s: %w: %q holds no permit", key, kv.ErrOverRelease, owner)
		}
		if h.Count--; h.Count == 0 {
			delete(st.Holders, owner)
		} else {
			st.Holders[owner] = h
		}
		inUse = st.inUse()
		return st.write(tx, key, tx.now(), s.Tag)
	})
	if err != nil {
		return 0, err
	}
	return inUse, nil
}

// Refresh makes all of owner's permits expire ttl from now (zero: never).
// It fails with ErrNotOwner when owner holds no permit.
func (s BoundedSemaphore) Refresh(ctx context.Context, key kv.Key, owner string, ttl time.Duration) error {
	if err := checkClaim(owner, ttl); err != nil {
		return err
	}
	return s.Cache.Transact(ctx, func(tx *Tx) error {
		st, err := readSemaphore(tx, key)
		if err != nil {
			return err
		}
		h, ok := st.Holders[owner]
		if !ok {
			return fmt.Errorf("engine: refresh semaphore %s: %w: %q holds no permit", key, kv.ErrNotOwner, owner)
		}
		now := tx.now()
		h.Expire = 0
		if ttl > 0 {
			h.Expire = now + ttl.Seconds()
		}
		st.Holders[owner] = h
		return st.write(tx, key, now, s.Tag)
	})
}

// Holders returns the permits each owner holds now; it is empty when no
// permit is held.
func (s BoundedSemaphore) Holders(ctx context.Context, key kv.Key) (map[string]int, error) {
	out := map[string]int{}
	err := s.Cache.Transact(ctx, func(tx *Tx) error {
		st, err := readSemaphore(tx, key)
		for owner, h := range st.Holders {
			out[owner] = h.Count
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readSemaphore reads the semaphore under key without its expired holders;
// a missing key is a semaphore nobody holds.
func readSemaphore(tx *Tx, key kv.Key) (semaphoreState, error) {
	st := semaphoreState{Holders: map[string]semaphoreHolder{}}
	it, ok, err := tx.Get(key, GetOptions{})
	if err != nil || !ok {
		return st, err
	}
	var got semaphoreState
	if it.Value.Type != kv.ValueText || json.Unmarshal(it.Value.Data, &got) != nil || got.Holders == nil {
		return st, fmt.Errorf("engine: semaphore %s: %w: it holds a %s value that is not semaphore state", key, kv.ErrWrongType, it.Value.Type)
	}
	now := tx.now()
	st.Value = got.Value
	for owner, h := range got.Holders {
		if h.Count >= 1 && (h.Expire == 0 || h.Expire > now) {
			st.Holders[owner] = h
		}
	}
	return st, nil
}

func (st semaphoreState) inUse() int {
	n := 0
	for _, h := range st.Holders {
		n += h.Count
	}
	return n
}

// soonestExpiry is how long until the first expiring holder's permits
// expire; 0 when no holder's permits expire.
func (st semaphoreState) soonestExpiry(now float64) time.Duration {
	first := 0.0
	for _, h := range st.Holders {
		if h.Expire != 0 && (first == 0 || h.Expire < first) {
			first = h.Expire
		}
	}
	return remainingUntil(first, now)
}

// write stores the state, expiring with its last expiring holder, or
// deletes the item when nobody holds a permit.
func (st semaphoreState) write(tx *Tx, key kv.Key, now float64, tag kv.Key) error {
	if len(st.Holders) == 0 {
		_, err := tx.Delete(key)
		return err
	}
	last := 0.0
	for _, h := range st.Holders {
		if h.Expire == 0 {
			last = 0
			break
		}
		last = math.Max(last, h.Expire)
	}
	return writeState(tx, key, st, untilExpiry(last, now), tag)
}

// Averager keeps a running average: python's Averager recipe. The item
// under the key holds the JSON array [total, count], python's
// (total, count) tuple, so python code can json.loads it.
type Averager struct {
	// Cache holds the running total and count.
	Cache Transactor
	// Expire is given to the item on every Add, like python's
	// Averager(expire=...); the zero Expiry never expires.
	Expire kv.Expiry
	// Tag is stored with the item on every Add; the zero Key stores none.
	Tag kv.Key
}

// Add adds value to the average and returns the new average. NaN and
// infinities are rejected with ErrInvalidValue, a total that would overflow
// with ErrOverflow.
func (a Averager) Add(ctx context.Context, key kv.Key, value float64) (average float64, err error) {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return 0, fmt.Errorf("engine: averager %s: %w: %v cannot be averaged", key, kv.ErrInvalidValue, value)
	}
	err = a.Cache.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil {
			return err
		}
		var total float64
		var count int64
		if ok {
			if total, count, err = decodeAverage(key, it.Value); err != nil {
				return err
			}
		}
		total += value
		count++
		if math.IsInf(total, 0) {
			return fmt.Errorf("engine: averager %s: %w: the total overflows", key, kv.ErrOverflow)
		}
		average = total / float64(count)
		return writeState(tx, key, []any{total, count}, a.Expire, a.Tag)
	})
	if err != nil {
		return 0, err
	}
	return average, nil
}

// Get returns the average and the number of values added; with none (count
// 0) the average is 0, where python's Averager.get returns None.
func (a Averager) Get(ctx context.Context, key kv.Key) (average float64, count int64, err error) {
	err = a.Cache.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil || !ok {
			return err
		}
		average, count, err = averageOf(key, it.Value)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return average, count, nil
}

// Pop returns the average and count like Get and removes them.
func (a Averager) Pop(ctx context.Context, key kv.Key) (average float64, count int64, err error) {
	err = a.Cache.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Pop(key, GetOptions{})
		if err != nil || !ok {
			return err
		}
		average, count, err = averageOf(key, it.Value)
		return err // a foreign value is put back by the rollback
	})
	if err != nil {
		return 0, 0, err
	}
	return average, count, nil
}

// Reset removes the average, so the next Add starts afresh.
func (a Averager) Reset(ctx context.Context, key kv.Key) error {
	_, _, err := a.Pop(ctx, key)
	return err
}

func averageOf(key kv.Key, v kv.Value) (float64, int64, error) {
	total, count, err := decodeAverage(key, v)
	if err != nil {
		return 0, 0, err
	}
	return total / float64(count), count, nil
}

// decodeAverage parses [total, count].
func decodeAverage(key kv.Key, v kv.Value) (float64, int64, error) {
	var pair []float64
	if v.Type == kv.ValueText && json.Unmarshal(v.Data, &pair) == nil && len(pair) == 2 &&
		pair[1] >= 1 && pair[1] == math.Trunc(pair[1]) && pair[1] < 1<<53 {
		return pair[0], int64(pair[1]), nil
	}
	return 0, 0, fmt.Errorf("engine: averager %s: %w: it holds a %s value that is not [total, count]", key, kv.ErrWrongType, v.Type)
}

// Throttler is a token-bucket rate limiter: python's throttle recipe,
// asked once per call instead of sleeping. A bucket holds up to count
// tokens, starts full and refills at count per period; the item under the
// key holds {"tally":<tokens>,"last":<unix nanoseconds of the last update>}
// and expires when the bucket would be full again (a missing bucket is a
// full one; the item lingers for a millisecond more). Time is the cache's
// clock (Options.Now).
type Throttler struct {
	// Cache holds the buckets.
	Cache Transactor
	// Tag is stored with the bucket item; the zero Key stores none.
	Tag kv.Key
}

// tokenSlack absorbs floating-point error in the refill so that waiting
// exactly the retryAfter a refusal reported is always enough.
const tokenSlack = 1e-9

// throttleMargin is how long a bucket item outlives the moment the bucket
// is full again (a full bucket and a missing one are the same).
const throttleMargin = time.Millisecond

// Throttle takes cost tokens from the bucket under key (count tokens,
// refilled at count per per) if it has them. It reports whether it did,
// when it did not how long until the bucket will have cost tokens, and the
// tokens left. A cost of 0 only looks. A cost above count could never be
// met and is rejected with ErrInvalidValue, as are a count below 1, a
// period that is not positive and a negative cost.
func (t Throttler) Throttle(ctx context.Context, key kv.Key, count int, per time.Duration, cost int) (allowed bool, retryAfter time.Duration, remaining float64, err error) {
	switch {
	case count < 1:
		return false, 0, 0, fmt.Errorf("engine: throttle %s: %w: count must be at least 1, got %d", key, kv.ErrInvalidValue, count)
	case per <= 0:
		return false, 0, 0, fmt.Errorf("engine: throttle %s: %w: period must be positive, got %v", key, kv.ErrInvalidValue, per)
	case cost < 0 || cost > count:
		return false, 0, 0, fmt.Errorf("engine: throttle %s: %w: cost must be between 0 and count %d, got %d", key, kv.ErrInvalidValue, count, cost)
	}
	capacity, period := float64(count), float64(per)
	err = t.Cache.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil {
			return err
		}
		now := tx.c.now().UnixNano()
		st := throttleState{Tally: capacity, Last: now}
		if ok {
			var got struct {
				Tally *float64 `json:"tally"`
				Last  *int64   `json:"last"`
			}
			if it.Value.Type != kv.ValueText || json.Unmarshal(it.Value.Data, &got) != nil || got.Tally == nil || got.Last == nil {
				return fmt.Errorf("engine: throttle %s: %w: it holds a %s value that is not a token bucket", key, kv.ErrWrongType, it.Value.Type)
			}
			st = throttleState{Tally: *got.Tally, Last: max(*got.Last, now)}
			if elapsed := now - *got.Last; elapsed > 0 {
				st.Tally += float64(elapsed) * capacity / period
			}
			st.Tally = min(st.Tally, capacity)
		}
		need := float64(cost)
		if st.Tally+tokenSlack < need {
			allowed, remaining = false, st.Tally
			retryAfter = time.Duration(math.Ceil((need - st.Tally) * period / capacity))
			return nil
		}
		allowed, retryAfter = true, 0
		st.Tally = max(st.Tally-need, 0)
		remaining = st.Tally
		if cost == 0 {
			return nil
		}
		// The item outlives the refill by a margin: its expire_time is a
		// float of epoch seconds, good to a few hundred nanoseconds only.
		full := time.Duration(math.Ceil((capacity - st.Tally) * period / capacity))
		return writeState(tx, key, st, kv.ExpireAfter(full+throttleMargin), t.Tag)
	})
	if err != nil {
		return false, 0, 0, err
	}
	return allowed, retryAfter, remaining, nil
}

// throttleState is the JSON of a Throttler bucket.
type throttleState struct {
	Tally float64 `json:"tally"`
	Last  int64   `json:"last"`
}

// checkOwner rejects an empty owner token.
func checkOwner(owner string) error {
	if owner == "" {
		return fmt.Errorf("engine: %w: the owner must not be empty", kv.ErrInvalidValue)
	}
	if len(owner) > MaxOwnerBytes {
		// Stored in the state, every holder's: past the value limit
		// otherwise, whatever --max-value-bytes says.
		return fmt.Errorf("engine: %w: the owner must be at most %d bytes, got %d", kv.ErrInvalidValue, MaxOwnerBytes, len(owner))
	}
	return nil
}

// MaxOwnerBytes bounds a lock's or semaphore's owner.
const MaxOwnerBytes = 1024

// checkClaim rejects an empty owner and a negative ttl.
func checkClaim(owner string, ttl time.Duration) error {
	if err := checkOwner(owner); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("engine: %w: ttl must not be negative, got %v", kv.ErrInvalidValue, ttl)
	}
	return nil
}

// ttlExpiry is the expiry of a claim for ttl; zero never expires.
func ttlExpiry(ttl time.Duration) kv.Expiry {
	if ttl > 0 {
		return kv.ExpireAfter(ttl)
	}
	return kv.Expiry{}
}

// untilExpiry is an Expiry ending at the absolute time exp (epoch seconds,
// 0 for never), for rewriting an item without changing when it expires.
func untilExpiry(exp, now float64) kv.Expiry {
	if exp == 0 {
		return kv.Expiry{}
	}
	return kv.ExpireAfter(max(time.Duration((exp-now)*1e9), 1))
}

// remainingUntil is the time from now to exp (epoch seconds, 0 for never),
// to the microsecond (the precision of a float epoch time), at least 1µs
// for an item that is still live; 0 when exp is 0.
func remainingUntil(exp, now float64) time.Duration {
	if exp == 0 {
		return 0
	}
	return max(time.Duration(math.Round((exp-now)*1e6))*time.Microsecond, time.Microsecond)
}

// writeState stores state as JSON text under key.
func writeState(tx *Tx, key kv.Key, state any, expire kv.Expiry, tag kv.Key) error {
	b, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("engine: %w: %v", kv.ErrInvalidValue, err)
	}
	return tx.Set(key, kv.Text(string(b)), kv.SetOptions{Expire: expire, Tag: tag})
}
