package engine

// #include "walvfs.h"
import "C"

import (
	"bytes"
	"fmt"
	"sync"
	"unsafe"
)

// frameVFS is the VFS of exclusive connections (Options.Exclusive):
// SQLite's unix-excl, with the frames a commit appends to the write-ahead
// log written in one system call instead of two per frame (walvfs.c). A
// SET's commit writes about three frames, each a 24-byte header and a page;
// measured on the project's VM, one pwrite of a header and a 4 KiB page
// costs 2.7–3.0 µs and two 4.9–5.0.
const frameVFS = C.DISKCACHE_FRAME_VFS

// registerFrameVFS registers frameVFS with SQLite, once per process.
var registerFrameVFS = sync.OnceValue(func() error {
	if rc := C.diskcache_register_frame_vfs(); rc != 0 {
		return fmt.Errorf("engine: register the %s VFS: SQLite error %d", frameVFS, int(rc))
	}
	return nil
})

// frameWrites returns how many log frames this process has written, and in
// how many writes (tests read them).
func frameWrites() (frames, writes int64) {
	return int64(C.diskcache_frames_written()), int64(C.diskcache_frame_writes())
}

// logReads returns how many reads this process has made of the logs of
// exclusive caches (tests read it): a page of the log that a connection
// does not have in memory.
func logReads() int64 { return int64(C.diskcache_log_reads()) }

// logName returns the name SQLite gives the log of the database at dbPath,
// NUL-terminated, for logSize. frameVFS must be registered.
func logName(dbPath string) ([]byte, error) {
	db := append([]byte(dbPath), 0)
	out := make([]byte, 4096+8)
	if rc := C.diskcache_log_name((*C.char)(unsafe.Pointer(&db[0])), (*C.char)(unsafe.Pointer(&out[0])), C.int(len(out))); rc != 0 {
		return nil, fmt.Errorf("engine: the log's name for %s: SQLite error %d", dbPath, int(rc))
	}
	return out[:bytes.IndexByte(out, 0)+1], nil
}

// logSize returns the size of the log file that frameVFS tracks for the
// connections of this process that have it open (name from logName):
// without a system call, where a stat costs a small commit more than its
// other system calls. ok is false when no connection has it open.
func logSize(name []byte) (size int64, ok bool) {
	n := int64(C.diskcache_log_size((*C.char)(unsafe.Pointer(&name[0]))))
	return n, n >= 0
}
