package engine

import (
	"context"
	"errors"
	"fmt"
)

// Tx is a write transaction (BEGIN IMMEDIATE) on a Cache. Every operation
// of the Cache is available on it; they all commit or roll back together.
// A Tx is used by one goroutine and only inside the function given to
// Cache.Transact.
type Tx struct {
	c        *Cache
	cn       *conn
	s        *Settings
	ctx      context.Context
	doomed   []string // value files to remove once the transaction commits
	created  []string // value files to remove if it rolls back
	finished bool
	broken   bool // rollback failed: the connection must not be reused
}

// Transact runs fn in one write transaction: the changes of every operation
// fn makes on tx are committed together when fn returns nil, and rolled back
// when it returns an error or panics. Other writers wait; readers go on.
// Operations on c itself (rather than tx) inside fn would wait for the
// transaction and deadlock.
func (c *Cache) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	return c.transact(ctx, "transact", fn)
}

func (c *Cache) transact(ctx context.Context, op string, fn func(tx *Tx) error) (err error) {
	var created *[]string
	defer func() {
		if created != nil {
			c.unpend(*created...)
		}
	}()
	if err := c.lockWrite(ctx, op); err != nil {
		return err
	}
	defer c.unlockWrite()
	cn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	if err := cn.execScript("BEGIN IMMEDIATE"); err != nil {
		c.release(cn)
		if isBusy(err) {
			return &TimeoutError{Op: op, Err: err}
		}
		return fmt.Errorf("engine: %s: begin: %w", op, err)
	}
	tx := &Tx{c: c, cn: cn, s: c.settings.Load(), ctx: ctx}
	created = &tx.created
	defer func() {
		if p := recover(); p != nil {
			tx.rollback()
			tx.releaseConn()
			panic(p)
		}
	}()
	if err = fn(tx); err != nil {
		tx.rollback()
		tx.releaseConn()
		return err
	}
	if err = cn.execScript("COMMIT"); err != nil {
		tx.rollback()
		tx.releaseConn()
		if isBusy(err) {
			return &TimeoutError{Op: op, Err: err}
		}
		return fmt.Errorf("engine: %s: commit: %w", op, err)
	}
	tx.finished = true
	c.release(cn)
	// Only now that no committed row names them may the files go.
	for _, f := range tx.doomed {
		c.removeFile(f)
	}
	return nil
}

func (tx *Tx) rollback() {
	if tx.finished {
		return
	}
	tx.finished = true
	if err := tx.cn.execScript("ROLLBACK"); err != nil && !tx.cn.sc.AutoCommit() {
		tx.broken = true
	}
	for _, f := range tx.created {
		tx.c.removeFile(f)
	}
}

func (tx *Tx) releaseConn() {
	if tx.broken {
		tx.c.discard(tx.cn)
		return
	}
	tx.c.release(tx.cn)
}

// removeAfterCommit schedules a value file for removal after commit.
func (tx *Tx) removeAfterCommit(filename any) {
	if name, ok := filename.(string); ok && name != "" {
		tx.doomed = append(tx.doomed, name)
	}
}

// Now returns the time the transaction uses, in epoch seconds.
func (tx *Tx) now() float64 { return tx.c.nowSeconds() }

// Settings returns the settings the transaction runs under.
func (tx *Tx) Settings() Settings { return *tx.s }

// write runs fn in a transaction of its own.
func (c *Cache) write(ctx context.Context, op string, fn func(tx *Tx) error) error {
	err := c.transact(ctx, op, fn)
	if err != nil && !errors.Is(err, ErrTimeout) && !isEngineError(err) {
		return fmt.Errorf("engine: %s: %w", op, err)
	}
	return err
}

// isEngineError reports errors that already say what went wrong.
func isEngineError(err error) bool {
	for _, e := range []error{ErrNotFound, ErrEmpty, ErrNotNumeric, ErrOverflow, ErrInvalidKey, ErrInvalidValue, ErrInvalidSetting, ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
