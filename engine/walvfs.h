// The VFS of walvfs.c, which engine/walvfs.go registers.
#define DISKCACHE_FRAME_VFS "diskcache-excl"
int diskcache_register_frame_vfs(void);
// Log frames written so far in this process, and the writes that carried
// them (a commit's frames go out in one).
unsigned long long diskcache_frames_written(void);
unsigned long long diskcache_frame_writes(void);
// Reads of a log so far, in this process.
unsigned long long diskcache_log_reads(void);
// The name SQLite gives db's log, into out (n bytes, at least the real
// VFS's mxPathname + 5).
int diskcache_log_name(const char *db, char *out, int n);
// The size of the log file name while a connection of this process has it
// open through the VFS; -1 when none has, or its size is not known.
long long diskcache_log_size(const char *name);
