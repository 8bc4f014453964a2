package cacheserver

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the move-state database
)

// moveStateFile is the SQLite database, beside the python-diskcache ones,
// where a shard keeps what it must remember of a running move across a
// restart.
const moveStateFile = "rebalance.db"

// moveState is what the new owner of keys remembers during one move (one
// announcement with a previous layout, named by its epoch):
//   - touched: routing keys written or deleted here during the move; an
//     incoming copy of a touched key is refused (newer writes and deletes
//     win) and reads no longer look at the previous owner;
//   - present: collections pulled or received whole.
//
// Both are persisted before the operation they guard is acknowledged.
// settled (memory only) are keys already pulled or known here, so that
// reads stop asking the previous owner; it need not survive a restart
// because the previous owner never gets a copy back.
type moveState struct {
	db *sql.DB

	mu      sync.Mutex
	epoch   int64
	touched map[string]bool
	settled map[string]bool
	present map[string]bool
}

func openMoveState(dataDir string) (*moveState, error) {
	// '%', '?' and '#' start escapes, the query and the fragment of a URI.
	path := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.Join(dataDir, moveStateFile))
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=10000")
	if err != nil {
		return nil, fmt.Errorf("move state: %w", err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS touched (epoch INTEGER NOT NULL, routing BLOB NOT NULL, PRIMARY KEY (epoch, routing))`,
		`CREATE TABLE IF NOT EXISTS present (epoch INTEGER NOT NULL, collection TEXT NOT NULL, PRIMARY KEY (epoch, collection))`,
	} {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			return nil, fmt.Errorf("move state: %w", err)
		}
	}
	return &moveState{db: db, touched: map[string]bool{}, settled: map[string]bool{}, present: map[string]bool{}}, nil
}

func (m *moveState) close() error { return m.db.Close() }

// forEpoch makes the state that of the move started at epoch (0: none),
// loading it after a restart and dropping what belonged to another move.
func (m *moveState) forEpoch(ctx context.Context, epoch int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch == m.epoch && epoch != 0 {
		return nil
	}
	m.touched, m.settled, m.present = map[string]bool{}, map[string]bool{}, map[string]bool{}
	m.epoch = epoch
	for _, q := range []string{`DELETE FROM touched WHERE epoch != ?`, `DELETE FROM present WHERE epoch != ?`} {
		if _, err := m.db.ExecContext(ctx, q, epoch); err != nil {
			return fmt.Errorf("move state: %w", err)
		}
	}
	rows, err := m.db.QueryContext(ctx, `SELECT routing FROM touched WHERE epoch = ?`, epoch)
	if err != nil {
		return fmt.Errorf("move state: %w", err)
	}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			rows.Close()
			return err
		}
		m.touched[string(b)], m.settled[string(b)] = true, true
	}
	rows.Close()
	rows, err = m.db.QueryContext(ctx, `SELECT collection FROM present WHERE epoch = ?`, epoch)
	if err != nil {
		return fmt.Errorf("move state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return err
		}
		m.present[c] = true
	}
	return rows.Err()
}

func (m *moveState) isTouched(routing []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.touched[string(routing)]
}

func (m *moveState) isSettled(routing []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settled[string(routing)]
}

func (m *moveState) settle(routing []byte) {
	m.mu.Lock()
	m.settled[string(routing)] = true
	m.mu.Unlock()
}

// touch records a local write or delete of routing, durably.
func (m *moveState) touch(ctx context.Context, routing []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.touched[string(routing)] {
		return nil
	}
	if _, err := m.db.ExecContext(ctx, `INSERT OR IGNORE INTO touched (epoch, routing) VALUES (?, ?)`, m.epoch, routing); err != nil {
		return fmt.Errorf("move state: record a write: %w", err)
	}
	m.touched[string(routing)], m.settled[string(routing)] = true, true
	return nil
}

func (m *moveState) isPresent(collection string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.present[collection]
}

// markPresent records that a collection is here whole, durably.
func (m *moveState) markPresent(ctx context.Context, collection string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.db.ExecContext(ctx, `INSERT OR IGNORE INTO present (epoch, collection) VALUES (?, ?)`, m.epoch, collection); err != nil {
		return fmt.Errorf("move state: record a collection: %w", err)
	}
	m.present[collection] = true
	return nil
}
