#ifndef EPOCHFS_CURING_H
#define EPOCHFS_CURING_H
// io_uring through liburing (Debian: liburing-dev) and the kernel's side of FUSE over io_uring (Linux 6.14,
// protocol 7.42), which Debian 12's 6.1 uapi headers predate: the layouts below are the
// kernel's include/uapi/linux/fuse.h and must match it byte for byte.
// liburing's own headers stay in ring.c: their io_uring structs clash with <linux/io_uring.h>,
// which other modules (swift-system) bring in.
#include <stdint.h>
#include <sys/uio.h>

// INIT flag (bit 9 of flags2): the daemon will serve requests through io_uring.
#define EPOCHFS_FUSE_OVER_IO_URING_FLAGS2 (1U << 9)

// What the kernel fills in and reads back in each entry's header buffer.
struct epochfs_fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;  // to echo in the commit
    uint32_t payload_sz; // bytes of the payload buffer in use, either way
    uint32_t padding;
    uint64_t reserved;
};

struct epochfs_fuse_uring_req_header {
    char in_out[128]; // fuse_in_header from the kernel, fuse_out_header back
    char op_in[128];  // the request's fixed per-opcode struct
    struct epochfs_fuse_uring_ent_in_out ring_ent_in_out;
};

enum {
    EPOCHFS_FUSE_IO_URING_CMD_REGISTER = 1,
    EPOCHFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

// The SQE's 80-byte command area.
struct epochfs_fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

// A ring of 128-byte SQEs (the command area holds epochfs_fuse_uring_cmd_req) that one thread
// alone submits to and waits on: the kernel fills an entry in task work, run while it waits.
struct epochfs_ring;

// NULL with *error set (an errno) when io_uring cannot be set up.
struct epochfs_ring *epochfs_ring_create(unsigned entries, int *error);
void epochfs_ring_destroy(struct epochfs_ring *ring);

// Queues a FUSE ring command for the entry whose header and payload buffers are buffers[0..1];
// 0, or -EBUSY when the submission queue is full.
int epochfs_ring_queue_fuse_command(struct epochfs_ring *ring, int fuse_fd, uint32_t command, uint16_t queue,
                                    uint64_t commit_id, const struct iovec *buffers, uint64_t user_data);

// Queues a one-shot wait for fd to become readable.
int epochfs_ring_queue_poll(struct epochfs_ring *ring, int fd, uint64_t user_data);

// Submits what is queued and waits for one completion: the number submitted, or -errno.
int epochfs_ring_submit_and_wait(struct epochfs_ring *ring);

// Takes the next completion if one is ready: 1 with its result and user data, else 0.
int epochfs_ring_next_completion(struct epochfs_ring *ring, int32_t *result, uint64_t *user_data);

// An eventfd (close-on-exec): a signal a ring can wait on.
int epochfs_eventfd(void);
#endif
