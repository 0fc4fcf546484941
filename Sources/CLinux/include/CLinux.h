#ifndef EPOCHFS_CLINUX_H
#define EPOCHFS_CLINUX_H
// Linux interfaces that Swift's Glibc module hides behind _GNU_SOURCE, re-exported from a
// C file compiled with it.

extern const int epochfs_O_PATH;
extern const int epochfs_O_NOATIME;
extern const int epochfs_O_DIRECT;
extern const int epochfs_O_TMPFILE;
extern const int epochfs_AT_EMPTY_PATH;
extern const long epochfs_UTIME_NOW;
extern const long epochfs_UTIME_OMIT;
extern const unsigned int epochfs_RENAME_NOREPLACE;
extern const unsigned int epochfs_RENAME_EXCHANGE;
extern const int epochfs_FALLOC_FL_KEEP_SIZE;
extern const int epochfs_FALLOC_FL_PUNCH_HOLE;
extern const int epochfs_FALLOC_FL_ZERO_RANGE;
extern const unsigned int epochfs_RENAME_WHITEOUT;
extern const int epochfs_SEEK_DATA;
extern const int epochfs_SEEK_HOLE;

int epochfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
int epochfs_syncfs(int fd);
// flock(2): Swift's Glibc module names its struct flock the same as the function.
int epochfs_flock(int fd, int operation);
// Starts writing the dirty pages of [offset, offset + length) of the file open at fd to disk,
// without waiting for them (sync_file_range(2) with SYNC_FILE_RANGE_WRITE).
int epochfs_start_writeback(int fd, long long offset, long long length);
// How many pages of [offset, offset + length) of the file open at fd are in the page cache,
// and how many of those are dirty (cachestat(2)): 0, or -1 with errno set where the kernel
// cannot tell (before Linux 6.5).
int epochfs_page_cache_pages(int fd, unsigned long long offset, unsigned long long length,
                             unsigned long long *cached, unsigned long long *dirty);
int epochfs_fallocate(int fd, int mode, long offset, long length);
// copy_file_range(2) with explicit offsets; returns the bytes copied, or -1 with errno set.
long epochfs_copy_file_range(int fd_in, long long offset_in, int fd_out, long long offset_out, unsigned long length);
// getdents64(2): the entries of the directory open at fd from its current offset.
long epochfs_getdents(int fd, void *buffer, unsigned long size);
// The size of the file open at fd, by statx(2); with force_sync, asked of its file system past
// any cached attributes (AT_STATX_FORCE_SYNC: a FUSE mount then asks its daemon).
int epochfs_statx_size(int fd, int force_sync, unsigned long long *size);
// The symbolic name of an errno ("ENOENT"), or NULL for a number glibc does not know
// (strerrorname_np).
const char *epochfs_errno_name(int errnum);
// readahead(2).
long epochfs_readahead(int fd, long long offset, unsigned long count);

// File handles (struct file_handle needs _GNU_SOURCE). name_to_handle_at(2) of the object
// open at fd (an O_PATH descriptor too): writes its handle type and up to `capacity` bytes
// (MAX_HANDLE_SZ, 128, holds any) and returns their number, or -1 with errno set.
int epochfs_name_to_handle(int fd, int *type, unsigned char *bytes, unsigned int capacity);
// open_by_handle_at(2) of the handle (type, bytes) on the file system of mount_fd.
int epochfs_open_by_handle(int mount_fd, int type, const unsigned char *bytes, unsigned int length, int flags);

// Extended attributes (sys/xattr.h is not in Swift's Glibc module).
long epochfs_getxattr(const char *path, const char *name, void *value, unsigned long size);
int epochfs_setxattr(const char *path, const char *name, const void *value, unsigned long size, int flags);
long epochfs_listxattr(const char *path, char *list, unsigned long size);
int epochfs_removexattr(const char *path, const char *name);
extern const int epochfs_XATTR_REPLACE;
extern const int epochfs_XATTR_CREATE;

// One pointer per thread (C's __thread, which Swift lacks): what the calling thread is serving.
void *epochfs_thread_context(void);
void epochfs_set_thread_context(void *context);

#endif
