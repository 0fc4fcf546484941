#ifndef EPOCHFS_CFUSE3_SHIM_H
#define EPOCHFS_CFUSE3_SHIM_H
// The low-level API of libfuse 3.x; the version must be set before the headers are read.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <fuse3/fuse.h>
// The kernel's side of the protocol: request and reply headers, INIT flags.
#include <linux/fuse.h>

// Swift cannot call function-like macros; these inline wrappers pin the versioned symbols.
static inline int epochfs_session_loop_mt(struct fuse_session *se, struct fuse_loop_config *config) {
    return fuse_session_loop_mt(se, config);
}

static inline struct fuse_session *epochfs_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *ops,
                                                       size_t op_size, void *userdata) {
    return fuse_session_new(args, ops, op_size, userdata);
}
#endif
