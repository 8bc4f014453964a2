// A VFS over SQLite's unix-excl that writes the frames a commit appends to
// the write-ahead log in one pwrite, instead of two per frame. SQLite
// writes a frame as its 24-byte header and then its page, at the next
// offset (walWriteOneFrame), and a commit's frames one after the other,
// the last one marked as the commit (a non-zero database size in its
// header); a system call costs more than copying a page. So the frames are
// held in a buffer and written together once the commit frame is complete
// (or HOLD_MAX bytes). Nothing else changes: held bytes go out before
// any other call on the file (a write elsewhere, a read, a sync, a
// truncate, a size, a file control, a close), so SQLite sees the file as if
// each write had been made at once. A crash with frames held loses only a
// transaction that had not committed: no other connection can see frames
// before the commit frame, which SQLite writes before it publishes them.
// Frames of a transaction that rolled back may still be held; they are
// dropped once another connection has changed the log (flush_held).
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "walvfs.h"

#define FRAME_HEADER 24
// HOLD_MAX: once whole frames held reach it, they go out. unix-excl
// writes at most 128 KiB - 1 bytes per call (seekAndWrite masks the count
// to 17 bits, and a write whose count masks to 0 fails as SQLITE_FULL);
// below HOLD_MAX, one more frame of the largest page (64 KiB and its
// header) keeps a write under that.
#define HOLD_MAX (60 * 1024)

static sqlite3_vfs *real_vfs;
static sqlite3_vfs frame_vfs;
static sqlite3_io_methods frame_methods;
static unsigned long long frames_written; // for tests
static unsigned long long frame_writes;   // for tests: writes that carried frames
static unsigned long long log_reads;     // for tests

// The size of a log file, shared by every connection of the process that
// has it open: the engine looks at it after each commit (a stat of the file
// costs more than the rest of a small commit's system calls). Every write
// to the log goes through this VFS, since the exclusive lock keeps other
// processes out.
typedef struct log_size {
	struct log_size *next;
	int refs;
	sqlite3_int64 size;
	// gen counts the changes made to the file (writes, truncations) by
	// any connection: see flush_held.
	unsigned long long gen;
	char name[];
} log_size;

static pthread_mutex_t log_sizes_mu = PTHREAD_MUTEX_INITIALIZER;
static log_size *log_sizes;

// log_size_ref returns name's record, made with size if there is none.
static log_size *log_size_ref(const char *name, sqlite3_int64 size) {
	pthread_mutex_lock(&log_sizes_mu);
	log_size *r = log_sizes;
	while (r != NULL && strcmp(r->name, name) != 0) {
		r = r->next;
	}
	if (r == NULL) {
		size_t n = strlen(name) + 1;
		r = malloc(sizeof(*r) + n);
		if (r != NULL) {
			memcpy(r->name, name, n);
			r->refs = 0;
			r->size = size;
			r->gen = 0;
			r->next = log_sizes;
			log_sizes = r;
		}
	}
	if (r != NULL) {
		r->refs++;
	}
	pthread_mutex_unlock(&log_sizes_mu);
	return r;
}

static void log_size_unref(log_size *r) {
	pthread_mutex_lock(&log_sizes_mu);
	if (--r->refs == 0) {
		log_size **p = &log_sizes;
		while (*p != r) {
			p = &(*p)->next;
		}
		*p = r->next;
		free(r);
	}
	pthread_mutex_unlock(&log_sizes_mu);
}

typedef struct {
	sqlite3_file base;          // pMethods = &frame_methods
	sqlite3_file *real;         // the unix-excl file, right after this struct
	unsigned char *held;        // bytes held: whole frames, then maybe a header
	int held_len;               // 0: nothing held
	int held_cap;
	sqlite3_int64 held_off;     // where the held bytes go in the file
	int held_frames;            // whole frames held
	int header_at;              // offset in held of a header without its page, or -1
	unsigned long long held_gen; // size->gen when the held bytes began
	int after_read;             // the last call was a read, at read_off
	sqlite3_int64 read_off;
	log_size *size;             // NULL when the record could not be made
} frame_file;

// track_write records a write that ended at end; after a failed write the
// file's size is read again (a short write may have grown it).
static void track_write(frame_file *f, int rc, sqlite3_int64 end) {
	if (f->size == NULL) {
		return;
	}
	if (rc != SQLITE_OK) {
		sqlite3_int64 n;
		if (f->real->pMethods->xFileSize(f->real, &n) == SQLITE_OK) {
			__atomic_store_n(&f->size->size, n, __ATOMIC_RELAXED);
		} else {
			__atomic_store_n(&f->size->size, -1, __ATOMIC_RELAXED);
		}
		return;
	}
	sqlite3_int64 cur = __atomic_load_n(&f->size->size, __ATOMIC_RELAXED);
	while (cur >= 0 && end > cur &&
	       !__atomic_compare_exchange_n(&f->size->size, &cur, end, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
	}
}

// changed counts a change of the file in its record.
static void changed(frame_file *f) {
	if (f->size != NULL) {
		__atomic_add_fetch(&f->size->gen, 1, __ATOMIC_SEQ_CST);
	}
}

// real_write writes through unix-excl and records the file's new size.
static int real_write(frame_file *f, const void *in, int n, sqlite3_int64 off) {
	int rc = f->real->pMethods->xWrite(f->real, in, n, off);
	track_write(f, rc, off + n);
	changed(f);
	return rc;
}

// flush_held writes the held bytes, unless another connection has changed
// the file since they began: then they are frames of a transaction that
// spilled pages to the log and rolled back (SQLite itself would have
// written them at once, and the other connection's frames over them), and
// they are dropped. No other connection can change the log while this
// one's write transaction runs, so frames still to commit are never
// dropped.
static int flush_held(frame_file *f) {
	if (f->held_len == 0) {
		return SQLITE_OK;
	}
	int n = f->held_len;
	f->held_len = 0;
	f->header_at = -1;
	if (f->size != NULL && __atomic_load_n(&f->size->gen, __ATOMIC_SEQ_CST) != f->held_gen) {
		f->held_frames = 0;
		return SQLITE_OK;
	}
	if (f->held_frames > 0) {
		__atomic_fetch_add(&frames_written, f->held_frames, __ATOMIC_RELAXED);
		__atomic_fetch_add(&frame_writes, 1, __ATOMIC_RELAXED);
		f->held_frames = 0;
	}
	return real_write(f, f->held, n, f->held_off);
}

// hold appends n bytes to the held ones; it fails (and holds nothing more)
// when the buffer cannot grow.
static int hold(frame_file *f, const void *in, int n) {
	if (f->held_cap < f->held_len + n) {
		int cap = f->held_cap ? f->held_cap : 8192;
		while (cap < f->held_len + n) {
			cap *= 2;
		}
		unsigned char *b = realloc(f->held, cap);
		if (b == NULL) {
			return 0;
		}
		f->held = b;
		f->held_cap = cap;
	}
	memcpy(f->held + f->held_len, in, n);
	f->held_len += n;
	return 1;
}

// commit_frame reports whether the frame header at h ends a transaction:
// its second field, the database size after the commit, is not zero.
static int commit_frame(const unsigned char *h) {
	return (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int f_close(sqlite3_file *p) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	int rc2 = f->real->pMethods->xClose(f->real);
	free(f->held);
	f->held = NULL;
	if (f->size != NULL) {
		log_size_unref(f->size);
		f->size = NULL;
	}
	return rc != SQLITE_OK ? rc : rc2;
}

static int f_read(sqlite3_file *p, void *out, int n, sqlite3_int64 off) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	if (rc != SQLITE_OK) {
		return rc;
	}
	__atomic_fetch_add(&log_reads, 1, __ATOMIC_RELAXED);
	f->after_read = 1;
	f->read_off = off;
	return f->real->pMethods->xRead(f->real, out, n, off);
}

static int f_write(sqlite3_file *p, const void *in, int n, sqlite3_int64 off) {
	frame_file *f = (frame_file *)p;
	int rewrite = f->after_read && off == f->read_off;
	f->after_read = 0;
	if (f->held_len > 0 && off == f->held_off + f->held_len && n > 0) {
		if (f->header_at >= 0) {
			// The page of the held header: the frame is whole.
			int at = f->header_at;
			if (hold(f, in, n)) {
				f->header_at = -1;
				f->held_frames++;
				if (commit_frame(f->held + at) || f->held_len >= HOLD_MAX || f->size == NULL) {
					return flush_held(f);
				}
				return SQLITE_OK;
			}
		} else if (n == FRAME_HEADER && hold(f, in, n)) {
			f->header_at = f->held_len - FRAME_HEADER; // the next frame's header
			return SQLITE_OK;
		}
	}
	int rc = flush_held(f);
	if (rc != SQLITE_OK) {
		return rc;
	}
	// A header written where the last read began is SQLite rewriting the
	// checksum of a frame it wrote before (walRewriteChecksums), not a new
	// frame whose page follows: it goes out at once, for no later call may
	// come to send it before a crash.
	if (n == FRAME_HEADER && !rewrite && hold(f, in, n)) {
		f->held_off = off;
		f->header_at = 0;
		if (f->size != NULL) {
			f->held_gen = __atomic_load_n(&f->size->gen, __ATOMIC_SEQ_CST);
		}
		return SQLITE_OK;
	}
	return real_write(f, in, n, off);
}

// refresh_size reads the file's size into its record, after a call that
// may have changed it other than by a write.
static void refresh_size(frame_file *f) {
	sqlite3_int64 n;
	if (f->size == NULL) {
		return;
	}
	if (f->real->pMethods->xFileSize(f->real, &n) != SQLITE_OK) {
		n = -1;
	}
	__atomic_store_n(&f->size->size, n, __ATOMIC_RELAXED);
}

static int f_truncate(sqlite3_file *p, sqlite3_int64 size) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	if (rc != SQLITE_OK) {
		return rc;
	}
	rc = f->real->pMethods->xTruncate(f->real, size);
	refresh_size(f);
	changed(f);
	return rc;
}

static int f_sync(sqlite3_file *p, int flags) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int f_file_size(sqlite3_file *p, sqlite3_int64 *size) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int f_lock(sqlite3_file *p, int level) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xLock(f->real, level);
}

static int f_unlock(sqlite3_file *p, int level) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xUnlock(f->real, level);
}

static int f_check_reserved_lock(sqlite3_file *p, int *out) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int f_file_control(sqlite3_file *p, int op, void *arg) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	if (rc != SQLITE_OK) {
		return rc;
	}
	rc = f->real->pMethods->xFileControl(f->real, op, arg);
	if (op == SQLITE_FCNTL_SIZE_HINT || op == SQLITE_FCNTL_CHUNK_SIZE) {
		refresh_size(f); // unix-excl may have grown the file
	}
	return rc;
}

static int f_sector_size(sqlite3_file *p) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xSectorSize(f->real);
}

static int f_device_characteristics(sqlite3_file *p) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int f_shm_map(sqlite3_file *p, int pg, int pgsz, int extend, void volatile **out) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, out);
}

static int f_shm_lock(sqlite3_file *p, int offset, int n, int flags) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void f_shm_barrier(sqlite3_file *p) {
	frame_file *f = (frame_file *)p;
	f->real->pMethods->xShmBarrier(f->real);
}

static int f_shm_unmap(sqlite3_file *p, int del) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xShmUnmap(f->real, del);
}

static int f_fetch(sqlite3_file *p, sqlite3_int64 off, int n, void **out) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, n, out);
}

static int f_unfetch(sqlite3_file *p, sqlite3_int64 off, void *page) {
	frame_file *f = (frame_file *)p;
	return f->real->pMethods->xUnfetch(f->real, off, page);
}

// Only the write-ahead log gets frame_methods: every other file is opened
// by unix-excl itself, in place, and never passes through this VFS again.
static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags, int *out_flags) {
	(void)vfs;
	if ((flags & SQLITE_OPEN_WAL) == 0) {
		return real_vfs->xOpen(real_vfs, name, p, flags, out_flags);
	}
	frame_file *f = (frame_file *)p;
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	f->header_at = -1;
	int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		if (f->real->pMethods != NULL) {
			f->real->pMethods->xClose(f->real);
		}
		p->pMethods = NULL;
		return rc;
	}
	sqlite3_int64 size;
	if (f->real->pMethods->xFileSize(f->real, &size) != SQLITE_OK) {
		size = -1;
	}
	f->size = log_size_ref(name, size);
	p->pMethods = &frame_methods;
	return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
	(void)vfs;
	return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
	(void)vfs;
	return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
	(void)vfs;
	return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *v_dl_open(sqlite3_vfs *vfs, const char *name) {
	(void)vfs;
	return real_vfs->xDlOpen(real_vfs, name);
}

static void v_dl_error(sqlite3_vfs *vfs, int n, char *out) {
	(void)vfs;
	real_vfs->xDlError(real_vfs, n, out);
}

static void (*v_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void) {
	(void)vfs;
	return real_vfs->xDlSym(real_vfs, h, sym);
}

static void v_dl_close(sqlite3_vfs *vfs, void *h) {
	(void)vfs;
	real_vfs->xDlClose(real_vfs, h);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out) {
	(void)vfs;
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us) {
	(void)vfs;
	return real_vfs->xSleep(real_vfs, us);
}

static int v_current_time(sqlite3_vfs *vfs, double *out) {
	(void)vfs;
	return real_vfs->xCurrentTime(real_vfs, out);
}

static int v_get_last_error(sqlite3_vfs *vfs, int n, char *out) {
	(void)vfs;
	return real_vfs->xGetLastError(real_vfs, n, out);
}

static int v_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
	(void)vfs;
	return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

int diskcache_log_name(const char *db, char *out, int n) {
	if (real_vfs == NULL || n < real_vfs->mxPathname + 5) {
		return SQLITE_ERROR;
	}
	// The name SQLite gives the log: the database's full path, "-wal".
	int rc = real_vfs->xFullPathname(real_vfs, db, real_vfs->mxPathname + 1, out);
	if (rc == SQLITE_OK) {
		strcat(out, "-wal");
	}
	return rc;
}

long long diskcache_log_size(const char *name) {
	long long size = -1;
	pthread_mutex_lock(&log_sizes_mu);
	for (log_size *r = log_sizes; r != NULL; r = r->next) {
		if (strcmp(r->name, name) == 0) {
			size = __atomic_load_n(&r->size, __ATOMIC_RELAXED);
			break;
		}
	}
	pthread_mutex_unlock(&log_sizes_mu);
	return size;
}

unsigned long long diskcache_frames_written(void) {
	return __atomic_load_n(&frames_written, __ATOMIC_RELAXED);
}

unsigned long long diskcache_frame_writes(void) {
	return __atomic_load_n(&frame_writes, __ATOMIC_RELAXED);
}

unsigned long long diskcache_log_reads(void) {
	return __atomic_load_n(&log_reads, __ATOMIC_RELAXED);
}

int diskcache_register_frame_vfs(void) {
	if (real_vfs != NULL) {
		return SQLITE_OK;
	}
	sqlite3_vfs *real = sqlite3_vfs_find("unix-excl");
	if (real == NULL || real->iVersion < 2) {
		return SQLITE_ERROR;
	}
	frame_methods = (sqlite3_io_methods){
		.iVersion = 3,
		.xClose = f_close,
		.xRead = f_read,
		.xWrite = f_write,
		.xTruncate = f_truncate,
		.xSync = f_sync,
		.xFileSize = f_file_size,
		.xLock = f_lock,
		.xUnlock = f_unlock,
		.xCheckReservedLock = f_check_reserved_lock,
		.xFileControl = f_file_control,
		.xSectorSize = f_sector_size,
		.xDeviceCharacteristics = f_device_characteristics,
		.xShmMap = f_shm_map,
		.xShmLock = f_shm_lock,
		.xShmBarrier = f_shm_barrier,
		.xShmUnmap = f_shm_unmap,
		.xFetch = f_fetch,
		.xUnfetch = f_unfetch,
	};
	frame_vfs = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(frame_file) + real->szOsFile,
		.mxPathname = real->mxPathname,
		.zName = DISKCACHE_FRAME_VFS,
		.xOpen = v_open,
		.xDelete = v_delete,
		.xAccess = v_access,
		.xFullPathname = v_full_pathname,
		.xDlOpen = v_dl_open,
		.xDlError = v_dl_error,
		.xDlSym = v_dl_sym,
		.xDlClose = v_dl_close,
		.xRandomness = v_randomness,
		.xSleep = v_sleep,
		.xCurrentTime = v_current_time,
		.xGetLastError = v_get_last_error,
		.xCurrentTimeInt64 = v_current_time_int64,
	};
	real_vfs = real;
	int rc = sqlite3_vfs_register(&frame_vfs, 0);
	if (rc != SQLITE_OK) {
		real_vfs = NULL;
	}
	return rc;
}
