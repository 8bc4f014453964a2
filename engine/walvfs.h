// The VFS of walvfs.c, which engine/walvfs.go registers.
#define DISKCACHE_FRAME_VFS "diskcache-excl"
int diskcache_register_frame_vfs(void);
// Frames written in one call so far, in this process.
unsigned long long diskcache_frames_joined(void);
