#ifndef EPOCHFS_CFUSE3_SHIM_H
#define EPOCHFS_CFUSE3_SHIM_H
// The low-level API of libfuse 3.x; the version must be set before the headers are read.
#define FUSE_USE_VERSION 35
#include <fuse3/fuse_lowlevel.h>
#include <fuse3/fuse.h>
#endif
