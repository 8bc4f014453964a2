package engine

import "context"

// A commitGate lets only so many databases of a fanout run a batch of writes
// at a time (FanoutOptions.CommitTurns). Group commit (tx.go) makes a batch
// of the writes that queue while a database's previous batch runs; with the
// writes of a server spread over eight databases that commit side by side,
// few queue on any one of them and most batches hold one or two writes. A
// commit's cost is mostly per batch (its BEGIN and COMMIT, and the log pages
// it writes, which the writes of a batch share), so taking turns commits
// about as many writes per batch as one database would, in far fewer log
// pages per write. Where writes come one at a time there is nothing to
// gather and waiting only delays them: a leader waits for a turn only while
// waiting gathers writes (Cache.waitsForTurn).
//
// The gate guards nothing: a batch that runs without a turn is as correct as
// one that waited for it. That is what keeps FanoutCache.Transact free of
// deadlocks: it holds a turn on database 0 while it opens a transaction on
// every other database, whose leaders, waiting for a turn, let its writes
// by (see enter).
type commitGate struct {
	turns chan struct{}
	// waiting, when set (by tests), is called when enter finds no turn
	// free and starts to wait.
	waiting func()
}

func newCommitGate(n int) *commitGate {
	return &commitGate{turns: make(chan struct{}, n)}
}

// gateHeldKey marks the context of a write made inside a batch that holds a
// turn of the gate, the key's value (FanoutCache.Transact's nested
// transactions).
type gateHeldKey struct{}

// withTurnHeld returns ctx marked as made inside a batch holding a turn of g.
func (g *commitGate) withTurnHeld(ctx context.Context) context.Context {
	return context.WithValue(ctx, gateHeldKey{}, g)
}

// heldBy reports whether ctx was marked by withTurnHeld.
func (g *commitGate) heldBy(ctx context.Context) bool {
	held, _ := ctx.Value(gateHeldKey{}).(*commitGate)
	return held == g
}

// tryEnter takes a turn if one is free, and reports whether it did.
func (g *commitGate) tryEnter() bool {
	select {
	case g.turns <- struct{}{}:
		return true
	default:
		return false
	}
}

// enter waits for a turn, or for bypass (a write made inside a batch holding
// a turn queued on this database: waiting for the turn that batch holds
// would never end). It reports whether it took a turn, to give back with
// leave.
func (g *commitGate) enter(bypass <-chan struct{}) bool {
	if g.tryEnter() {
		return true
	}
	if g.waiting != nil {
		g.waiting()
	}
	select {
	case g.turns <- struct{}{}:
		return true
	case <-bypass:
		return false
	}
}

// leave gives back a turn taken by enter.
func (g *commitGate) leave() { <-g.turns }
