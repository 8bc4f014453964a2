// A VFS over SQLite's unix-excl that writes each frame of the write-ahead
// log in one pwrite instead of two. SQLite writes a frame as its 24-byte
// header and then its page, at the next offset (walWriteOneFrame); a system
// call costs more than copying a page, so the header is held back and sent
// with the page. Nothing else changes: a held header goes out before any
// other call on the file (a write elsewhere, a read, a sync, a truncate, a
// size, a file control, a close), so SQLite sees the file as if it had been
// written at once, and a crash between the two loses only what a crash
// between SQLite's own two writes would (the frame, whose checksum would
// not match without its page).

#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "walvfs.h"

#define FRAME_HEADER 24

static sqlite3_vfs *real_vfs;
static sqlite3_vfs frame_vfs;
static sqlite3_io_methods frame_methods;
static unsigned long long frames_joined; // for tests

typedef struct {
	sqlite3_file base;          // pMethods = &frame_methods
	sqlite3_file *real;         // the unix-excl file, right after this struct
	sqlite3_int64 held_off;     // offset of the held header
	int held;                   // a header is held
	unsigned char header[FRAME_HEADER];
	unsigned char *buf;         // header and page, written together
	int buf_cap;
} frame_file;

static int flush_held(frame_file *f) {
	if (!f->held) {
		return SQLITE_OK;
	}
	f->held = 0;
	return f->real->pMethods->xWrite(f->real, f->header, FRAME_HEADER, f->held_off);
}

static int f_close(sqlite3_file *p) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	int rc2 = f->real->pMethods->xClose(f->real);
	free(f->buf);
	f->buf = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int f_read(sqlite3_file *p, void *out, int n, sqlite3_int64 off) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	if (rc != SQLITE_OK) {
		return rc;
	}
	return f->real->pMethods->xRead(f->real, out, n, off);
}

static int f_write(sqlite3_file *p, const void *in, int n, sqlite3_int64 off) {
	frame_file *f = (frame_file *)p;
	if (f->held) {
		if (off == f->held_off + FRAME_HEADER && n > 0) {
			int total = FRAME_HEADER + n;
			if (f->buf_cap < total) {
				unsigned char *b = realloc(f->buf, total);
				if (b == NULL) {
					int rc = flush_held(f);
					return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, in, n, off);
				}
				f->buf = b;
				f->buf_cap = total;
			}
			memcpy(f->buf, f->header, FRAME_HEADER);
			memcpy(f->buf + FRAME_HEADER, in, n);
			f->held = 0;
			__atomic_fetch_add(&frames_joined, 1, __ATOMIC_RELAXED);
			return f->real->pMethods->xWrite(f->real, f->buf, total, f->held_off);
		}
		int rc = flush_held(f);
		if (rc != SQLITE_OK) {
			return rc;
		}
	}
	if (n == FRAME_HEADER) {
		memcpy(f->header, in, FRAME_HEADER);
		f->held_off = off;
		f->held = 1;
		return SQLITE_OK;
	}
	return f->real->pMethods->xWrite(f->real, in, n, off);
}

static int f_truncate(sqlite3_file *p, sqlite3_int64 size) {
	frame_file *f = (frame_file *)p;
	int rc = flush_held(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
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
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
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
	int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		if (f->real->pMethods != NULL) {
			f->real->pMethods->xClose(f->real);
		}
		p->pMethods = NULL;
		return rc;
	}
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

unsigned long long diskcache_frames_joined(void) {
	return __atomic_load_n(&frames_joined, __ATOMIC_RELAXED);
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
