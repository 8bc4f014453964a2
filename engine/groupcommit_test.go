package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// queueLen reports how many writers wait for the writer.
func (c *Cache) queueLen() int {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return len(c.w.queue)
}

// TestGroupCommitIsolatesFailures queues writers behind a held transaction
// so they run as one batch, and checks that a failing or panicking writer
// rolls back only its own changes and files.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, t.TempDir(), Options{Settings: map[settings.Name]any{settings.NameDiskMinFileSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	held, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- c.Transact(ctx, func(tx *Tx) error {
			close(held)
			<-release
			return tx.Set(kv.TextKey("first"), kv.Int(0), kv.SetOptions{})
		})
	}()
	<-held

	const writers = 40
	errFail := errors.New("fail on purpose")
	results := make([]error, writers)
	panics := make([]any, writers)
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			results[i] = c.Transact(ctx, func(tx *Tx) error {
				big := bytes.Repeat([]byte{byte(i)}, 64) // file-backed
				if err := tx.Set(kv.IntKey(int64(i)), kv.Bytes(big), kv.SetOptions{}); err != nil {
					return err
				}
				if _, err := tx.Incr(kv.TextKey("total"), kv.Int(1), kv.Int(0)); err != nil {
					return err
				}
				switch i % 5 {
				case 1:
					return errFail
				case 2:
					panic(fmt.Sprintf("panic %d", i))
				}
				return nil
			})
		}()
	}
	for c.queueLen() < writers {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	ok := 0
	for i := 0; i < writers; i++ {
		it, found, err := c.Get(ctx, kv.IntKey(int64(i)), GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch i % 5 {
		case 1:
			if !errors.Is(results[i], errFail) || found {
				t.Errorf("writer %d: err %v, key found %v; want its error and no key", i, results[i], found)
			}
		case 2:
			if panics[i] != fmt.Sprintf("panic %d", i) || found {
				t.Errorf("writer %d: panic %v, key found %v; want its own panic and no key", i, panics[i], found)
			}
		default:
			ok++
			if results[i] != nil || panics[i] != nil || !found || len(it.Value.Data) != 64 || it.Value.Data[0] != byte(i) {
				t.Errorf("writer %d: err %v panic %v found %v value %v", i, results[i], panics[i], found, it.Value)
			}
		}
	}
	total, _, _ := c.Get(ctx, kv.TextKey("total"), GetOptions{})
	if !total.Value.Equal(kv.Int(int64(ok))) {
		t.Errorf("total = %s, want %d: failed writers' increments must be rolled back", total.Value, ok)
	}
	// Files of rolled-back writes are gone; Check finds nothing to fix.
	warns, err := c.Check(ctx, false)
	if err != nil || len(warns) != 0 {
		t.Fatalf("Check = %v, %v", warns, err)
	}
}
