package engine

import (
	"sync"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// hotValues keeps the values of one database that were read last in
// memory, so that a get they answer runs no SQL (no SQLite step, no file
// locks: about half of a small get's cost in the server). It is sound only
// while this process is the database's only writer (Options.HotBytes says
// so): every row this process changes reaches it through SQLite's update
// hook, which drops the row's entry; a change made by another process does
// not.
//
// Freshness: an entry is dropped by the update hook while its row changes,
// before the transaction commits, so no read after the commit can find it.
// A read that missed fills an entry only if no write transaction ran while
// it read the database (gen unchanged, none running): otherwise the row it
// read may already be gone or changed.
//
// A get that found no live row keeps that too (an absent entry, filled
// under the same rule), so that the next get of a missing key runs no SQL
// either. The update hook names rows, not keys, and an absent entry has no
// row: before a write transaction commits, beforeCommit drops the absent
// entry of every key whose row it inserted or updated, by the keys its sets
// name (hotWrite); a row it cannot name drops them all.
type hotValues struct {
	max int64 // bytes; an entry costs its key, value and tag plus hotEntryCost

	mu      sync.Mutex
	bytes   int64
	byKey   map[kv.Key]*hotEntry
	byRow   map[int64]*hotEntry
	head    hotEntry // sentinel of the recency list: head.next is the newest
	gen     uint64   // advanced by every write transaction
	writing int      // write transactions running
	// While one runs: a count of row changes, and the last change of each
	// row, so that a write's own value goes to memory once it commits
	// unless a later statement of the transaction changed the row again.
	changes uint64
	changed map[int64]uint64
	// Rows the running write transaction inserted or updated (a key may
	// have come to life), and the absent entries.
	revived map[int64]struct{}
	absent  map[kv.Key]*hotEntry

	hits, misses, drops int64
}

// hotEntryCost is what an entry costs beyond its key, value and tag bytes
// (the entry, two map slots, the list links), rounded up.
const hotEntryCost = 160

type hotEntry struct {
	rowid      int64
	item       Item // Key, Value, ExpireTime, Tag; never a file-backed value
	absent     bool // the key had no live row: only item.Key is set, rowid is not
	cost       int64
	prev, next *hotEntry
}

// HotStats are the figures of the in-memory values (Options.HotBytes).
type HotStats struct {
	Hits, Misses int64 // gets answered from memory, and gets that were not
	Entries      int   // absent ones included
	Absent       int   // keys memory knows have no live item
	Bytes        int64
}

func newHotValues(max int64) *hotValues {
	h := &hotValues{max: max, byKey: map[kv.Key]*hotEntry{}, byRow: map[int64]*hotEntry{}, changed: map[int64]uint64{}, revived: map[int64]struct{}{}, absent: map[kv.Key]*hotEntry{}, gen: 1}
	h.head.next, h.head.prev = &h.head, &h.head
	return h
}

// lookup returns the item under key if it is in memory. found is true when
// memory answers: a live item (ok), or none (not ok) because the item
// expired or the key has none, which the database would not return either.
//
// A miss is counted unless first is set: a first look whose miss is
// followed by a Get, which counts it.
func (h *hotValues) lookup(key kv.Key, now float64, first bool) (it Item, ok, found bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.byKey[key]
	if e == nil {
		if !first {
			h.misses++
		}
		return Item{}, false, false
	}
	h.hits++
	if h.head.next != e {
		h.unlink(e)
		h.pushFront(e)
	}
	if e.absent || e.item.ExpireTime != 0 && !(e.item.ExpireTime > now) {
		return Item{}, false, true
	}
	return e.item, true, true
}

// rowOf returns the row memory holds key's value from. Called inside a
// write transaction of this process (no other write runs, and no read
// fills memory meanwhile), it names the row the database holds for key at
// that moment: an entry is dropped when its row changes, and put only as a
// committed transaction left it. Its value is never in a file.
func (h *hotValues) rowOf(key kv.Key) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.byKey[key]
	if e == nil || e.absent {
		return 0, false
	}
	return e.rowid, true
}

// fillToken is taken before a read of the database; fill with it keeps
// what was read unless a write transaction ran meanwhile. Zero: do not fill.
func (h *hotValues) fillToken() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing > 0 {
		return 0
	}
	return h.gen
}

// fill keeps the item read from row rowid under the token fillToken gave
// before the read.
func (h *hotValues) fill(token uint64, rowid int64, it Item) {
	if it.Body != nil || it.Size != 0 {
		return // file-backed values stay in their files
	}
	cost := int64(len(it.Value.Data)+len(it.Key.Text())+len(it.Tag.Text())) + hotEntryCost
	if cost > h.max/4 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if token == 0 || token != h.gen || h.writing > 0 {
		return
	}
	h.put(rowid, it, cost)
}

// fillAbsent keeps that key has no live item, read under the token
// fillToken gave before the read.
func (h *hotValues) fillAbsent(token uint64, key kv.Key) {
	cost := int64(len(key.Text())) + hotEntryCost
	if cost > h.max/4 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if token == 0 || token != h.gen || h.writing > 0 || h.byKey[key] != nil {
		return
	}
	h.evictFor(cost)
	e := &hotEntry{item: Item{Key: key}, absent: true, cost: cost}
	h.byKey[key] = e
	h.absent[key] = e
	h.bytes += cost
	h.pushFront(e)
}

// put keeps it as row rowid's value, in place of what memory held for its
// key or row.
func (h *hotValues) put(rowid int64, it Item, cost int64) {
	if old := h.byKey[it.Key]; old != nil {
		h.remove(old)
	}
	if old := h.byRow[rowid]; old != nil {
		h.remove(old)
	}
	h.evictFor(cost)
	e := &hotEntry{rowid: rowid, item: it, cost: cost}
	h.byKey[it.Key] = e
	h.byRow[rowid] = e
	h.bytes += cost
	h.pushFront(e)
}

// evictFor drops the least recently used entries until cost more fits.
func (h *hotValues) evictFor(cost int64) {
	for h.bytes+cost > h.max && h.head.prev != &h.head {
		h.remove(h.head.prev)
	}
}

// writeBegin and writeEnd bracket every write transaction of this process.
func (h *hotValues) writeBegin() {
	h.mu.Lock()
	h.writing++
	h.gen++
	clear(h.changed)
	clear(h.revived)
	h.mu.Unlock()
}

// beforeCommit drops the absent entries of the keys whose rows the running
// write transaction inserted or updated, before its COMMIT makes them live:
// writes holds the transaction's sets, which name their rows' keys; a row
// none of them names drops every absent entry.
func (h *hotValues) beforeCommit(writes func(yield func(hotWrite) bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.absent) == 0 || len(h.revived) == 0 {
		return
	}
	named := 0
	for w := range writes {
		if _, ok := h.revived[w.rowid]; ok {
			named++
			if e := h.absent[w.item.Key]; e != nil {
				h.remove(e)
			}
		}
	}
	if named < len(h.revived) {
		h.clearAbsent()
	}
}

func (h *hotValues) clearAbsent() {
	for _, e := range h.absent {
		h.remove(e)
	}
}

// hotWrite is a value a write stored in row rowid, to keep in memory once
// its transaction commits; change is the row's last change then.
type hotWrite struct {
	rowid  int64
	change uint64
	item   Item
}

// lastChange returns the count of the row's last change in the running
// write transaction (0: none).
func (h *hotValues) lastChange(rowid int64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed[rowid]
}

// committed keeps the values the transaction just committed wrote, unless
// a later statement of it changed their row again. Called by the writer
// between COMMIT and writeEnd: no other write of this process runs, and
// what it keeps is what the database now holds.
func (h *hotValues) committed(writes []hotWrite) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range writes {
		if h.changed[w.rowid] != w.change {
			continue
		}
		cost := int64(len(w.item.Value.Data)+len(w.item.Key.Text())+len(w.item.Tag.Text())) + hotEntryCost
		if cost > h.max/4 {
			continue
		}
		h.put(w.rowid, w.item, cost)
	}
}

func (h *hotValues) writeEnd() {
	h.mu.Lock()
	h.writing--
	h.gen++
	h.mu.Unlock()
}

// rowChanged is the update hook: the row was inserted, updated or deleted
// by a statement of this process. Outside a write transaction (nothing
// brackets it) memory cannot tell what else changes, so it forgets all.
func (h *hotValues) rowChanged(deleted bool, rowid int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing == 0 {
		h.gen++
		h.clearLocked()
		return
	}
	h.changes++
	h.changed[rowid] = h.changes
	if !deleted {
		h.revived[rowid] = struct{}{}
	}
	if e := h.byRow[rowid]; e != nil {
		h.remove(e)
		h.drops++
	}
}

func (h *hotValues) clearLocked() {
	clear(h.byKey)
	clear(h.byRow)
	clear(h.absent)
	h.head.next, h.head.prev = &h.head, &h.head
	h.bytes = 0
}

func (h *hotValues) stats() HotStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HotStats{Hits: h.hits, Misses: h.misses, Entries: len(h.byKey), Absent: len(h.absent), Bytes: h.bytes}
}

func (h *hotValues) remove(e *hotEntry) {
	h.unlink(e)
	delete(h.byKey, e.item.Key)
	if e.absent {
		delete(h.absent, e.item.Key)
	} else {
		delete(h.byRow, e.rowid)
	}
	h.bytes -= e.cost
}

func (h *hotValues) unlink(e *hotEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (h *hotValues) pushFront(e *hotEntry) {
	e.prev, e.next = &h.head, h.head.next
	h.head.next.prev = e
	h.head.next = e
}
