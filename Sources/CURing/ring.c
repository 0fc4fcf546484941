#include "CURing.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

struct epochfs_ring {
    struct io_uring ring;
};

struct epochfs_ring *epochfs_ring_create(unsigned entries, int *error) {
    struct epochfs_ring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        *error = ENOMEM;
        return NULL;
    }
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int result = io_uring_queue_init_params(entries, &ring->ring, &params);
    if (result < 0) {
        free(ring);
        *error = -result;
        return NULL;
    }
    return ring;
}

void epochfs_ring_destroy(struct epochfs_ring *ring) {
    io_uring_queue_exit(&ring->ring);
    free(ring);
}

int epochfs_ring_queue_fuse_command(struct epochfs_ring *ring, int fuse_fd, uint32_t command, uint16_t queue,
                                    uint64_t commit_id, const struct iovec *buffers, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fuse_fd, buffers, 2, 0);
    sqe->cmd_op = command;
    memset(sqe->cmd, 0, 80);
    struct epochfs_fuse_uring_cmd_req *request = (struct epochfs_fuse_uring_cmd_req *)sqe->cmd;
    request->qid = queue;
    request->commit_id = commit_id;
    sqe->user_data = user_data;
    return 0;
}

int epochfs_ring_queue_poll(struct epochfs_ring *ring, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    sqe->user_data = user_data;
    return 0;
}

int epochfs_ring_submit_and_wait(struct epochfs_ring *ring) { return io_uring_submit_and_wait(&ring->ring, 1); }

int epochfs_ring_next_completion(struct epochfs_ring *ring, int32_t *result, uint64_t *user_data) {
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_peek_cqe(&ring->ring, &cqe) != 0 || cqe == NULL) return 0;
    *result = cqe->res;
    *user_data = cqe->user_data;
    io_uring_cqe_seen(&ring->ring, cqe);
    return 1;
}

int epochfs_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
