#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
#include "CLinux.h"

const int epochfs_O_PATH = O_PATH;
const int epochfs_O_NOATIME = O_NOATIME;
const int epochfs_O_DIRECT = O_DIRECT;
const int epochfs_O_TMPFILE = O_TMPFILE;
const int epochfs_AT_EMPTY_PATH = AT_EMPTY_PATH;
const int epochfs_XATTR_REPLACE = XATTR_REPLACE;
const int epochfs_XATTR_CREATE = XATTR_CREATE;
const long epochfs_UTIME_NOW = UTIME_NOW;
const long epochfs_UTIME_OMIT = UTIME_OMIT;
const unsigned int epochfs_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int epochfs_RENAME_EXCHANGE = RENAME_EXCHANGE;
const int epochfs_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int epochfs_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int epochfs_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
const unsigned int epochfs_RENAME_WHITEOUT = RENAME_WHITEOUT;
const int epochfs_SEEK_DATA = SEEK_DATA;
const int epochfs_SEEK_HOLE = SEEK_HOLE;

int epochfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int epochfs_syncfs(int fd) { return syncfs(fd); }

int epochfs_flock(int fd, int operation) { return flock(fd, operation); }

int epochfs_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

#ifndef SYS_cachestat
#define SYS_cachestat 451 // Linux 6.5; the same number on x86_64 and arm64
#endif
struct epochfs_cachestat_range { uint64_t off, len; };
struct epochfs_cachestat { uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };

int epochfs_page_cache_pages(int fd, unsigned long long offset, unsigned long long length,
                             unsigned long long *cached, unsigned long long *dirty) {
    struct epochfs_cachestat_range range = { offset, length };
    struct epochfs_cachestat stat;
    if (syscall(SYS_cachestat, fd, &range, &stat, 0) != 0) return -1;
    *cached = stat.nr_cache;
    *dirty = stat.nr_dirty;
    return 0;
}

int epochfs_name_to_handle(int fd, int *type, unsigned char *bytes, unsigned int capacity) {
    if (capacity > MAX_HANDLE_SZ) capacity = MAX_HANDLE_SZ;
    struct { struct file_handle head; unsigned char room[MAX_HANDLE_SZ]; } handle;
    handle.head.handle_bytes = capacity;
    int mount_id;
    if (name_to_handle_at(fd, "", &handle.head, &mount_id, AT_EMPTY_PATH) != 0) return -1;
    *type = handle.head.handle_type;
    memcpy(bytes, handle.head.f_handle, handle.head.handle_bytes);
    return (int)handle.head.handle_bytes;
}

int epochfs_open_by_handle(int mount_fd, int type, const unsigned char *bytes, unsigned int length, int flags) {
    if (length > MAX_HANDLE_SZ) { errno = EINVAL; return -1; }
    struct { struct file_handle head; unsigned char room[MAX_HANDLE_SZ]; } handle;
    handle.head.handle_bytes = length;
    handle.head.handle_type = type;
    memcpy(handle.head.f_handle, bytes, length);
    return open_by_handle_at(mount_fd, &handle.head, flags);
}

int epochfs_fallocate(int fd, int mode, long offset, long length) { return fallocate(fd, mode, offset, length); }

long epochfs_getxattr(const char *path, const char *name, void *value, unsigned long size) {
    return getxattr(path, name, value, size);
}
int epochfs_setxattr(const char *path, const char *name, const void *value, unsigned long size, int flags) {
    return setxattr(path, name, value, size, flags);
}
long epochfs_listxattr(const char *path, char *list, unsigned long size) { return listxattr(path, list, size); }
int epochfs_removexattr(const char *path, const char *name) { return removexattr(path, name); }

long epochfs_copy_file_range(int fd_in, long long offset_in, int fd_out, long long offset_out, unsigned long length) {
    loff_t in = offset_in, out = offset_out;
    return copy_file_range(fd_in, &in, fd_out, &out, length, 0);
}

long epochfs_readahead(int fd, long long offset, unsigned long count) { return readahead(fd, offset, count); }

long epochfs_getdents(int fd, void *buffer, unsigned long size) { return getdents64(fd, buffer, size); }

int epochfs_statx_size(int fd, int force_sync, unsigned long long *size) {
    struct statx info;
    int flags = AT_EMPTY_PATH | (force_sync ? AT_STATX_FORCE_SYNC : AT_STATX_SYNC_AS_STAT);
    if (statx(fd, "", flags, STATX_SIZE, &info) != 0) return -1;
    *size = info.stx_size;
    return 0;
}

static __thread void *thread_context;
void *epochfs_thread_context(void) { return thread_context; }
void epochfs_set_thread_context(void *context) { thread_context = context; }
const char *epochfs_errno_name(int errnum) { return strerrorname_np(errnum); }
