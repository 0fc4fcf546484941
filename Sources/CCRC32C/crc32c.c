// CRC-32C for the WAL reader. Not cryptography: etcd's record checksums.
// The hardware path runs three independent crc32q streams to hide the instruction's
// 3-cycle latency, then joins them by shifting a CRC over a run of zero bytes with a
// precomputed GF(2) operator (the construction of Mark Adler's crc32c.c).

#include "CCRC32C.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82f63b78u /* reflected Castagnoli polynomial */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t table[8][256];
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];
static int has_sse42;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static uint32_t gf2_matrix_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_matrix_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_matrix_times(mat, mat[n]);
}

/* The operator that appends `len` zero bytes (a power of two) to an uninverted CRC register. */
static void zeros_operator(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = POLY; /* one zero bit */
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_matrix_square(even, odd); /* two zero bits */
    gf2_matrix_square(odd, even); /* four zero bits */
    do {
        gf2_matrix_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        gf2_matrix_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void shift_table(uint32_t zeros[4][256], size_t len) {
    uint32_t op[32];
    zeros_operator(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_matrix_times(op, n);
        zeros[1][n] = gf2_matrix_times(op, n << 8);
        zeros[2][n] = gf2_matrix_times(op, n << 16);
        zeros[3][n] = gf2_matrix_times(op, n << 24);
    }
}

static inline uint32_t shift(uint32_t zeros[4][256], uint32_t crc) {
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

static void initialize(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
        table[0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = table[0][n];
        for (int k = 1; k < 8; k++) {
            crc = table[0][crc & 0xff] ^ (crc >> 8);
            table[k][n] = crc;
        }
    }
    shift_table(shift_long, LONG_BLOCK);
    shift_table(shift_short, SHORT_BLOCK);
#if defined(__x86_64__)
    __builtin_cpu_init();
    has_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t value;
    memcpy(&value, p, 8);
    return value; /* little-endian hosts only: x86_64 and aarch64 */
}

static uint32_t table_register(uint32_t crc, const unsigned char *next, size_t count) {
    while (count && ((uintptr_t)next & 7)) {
        crc = table[0][(crc ^ *next++) & 0xff] ^ (crc >> 8);
        count--;
    }
    while (count >= 8) {
        uint64_t word = load64(next) ^ crc;
        crc = table[7][word & 0xff] ^ table[6][(word >> 8) & 0xff] ^ table[5][(word >> 16) & 0xff] ^
              table[4][(word >> 24) & 0xff] ^ table[3][(word >> 32) & 0xff] ^ table[2][(word >> 40) & 0xff] ^
              table[1][(word >> 48) & 0xff] ^ table[0][word >> 56];
        next += 8;
        count -= 8;
    }
    while (count--) crc = table[0][(crc ^ *next++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t hardware_register(uint32_t crc, const unsigned char *next, size_t count) {
    uint64_t crc0 = crc;
    while (count && ((uintptr_t)next & 7)) {
        crc0 = __builtin_ia32_crc32qi((uint32_t)crc0, *next++);
        count--;
    }
    while (count >= 3 * LONG_BLOCK) {
        uint64_t crc1 = 0, crc2 = 0;
        const unsigned char *end = next + LONG_BLOCK;
        do {
            crc0 = __builtin_ia32_crc32di(crc0, load64(next));
            crc1 = __builtin_ia32_crc32di(crc1, load64(next + LONG_BLOCK));
            crc2 = __builtin_ia32_crc32di(crc2, load64(next + 2 * LONG_BLOCK));
            next += 8;
        } while (next < end);
        crc0 = shift(shift_long, (uint32_t)crc0) ^ crc1;
        crc0 = shift(shift_long, (uint32_t)crc0) ^ crc2;
        next += 2 * LONG_BLOCK;
        count -= 3 * LONG_BLOCK;
    }
    while (count >= 3 * SHORT_BLOCK) {
        uint64_t crc1 = 0, crc2 = 0;
        const unsigned char *end = next + SHORT_BLOCK;
        do {
            crc0 = __builtin_ia32_crc32di(crc0, load64(next));
            crc1 = __builtin_ia32_crc32di(crc1, load64(next + SHORT_BLOCK));
            crc2 = __builtin_ia32_crc32di(crc2, load64(next + 2 * SHORT_BLOCK));
            next += 8;
        } while (next < end);
        crc0 = shift(shift_short, (uint32_t)crc0) ^ crc1;
        crc0 = shift(shift_short, (uint32_t)crc0) ^ crc2;
        next += 2 * SHORT_BLOCK;
        count -= 3 * SHORT_BLOCK;
    }
    while (count >= 8) {
        crc0 = __builtin_ia32_crc32di(crc0, load64(next));
        next += 8;
        count -= 8;
    }
    while (count--) crc0 = __builtin_ia32_crc32qi((uint32_t)crc0, *next++);
    return (uint32_t)crc0;
}
#endif

uint32_t epochfs_crc32c_update(uint32_t crc, const void *bytes, size_t count) {
    pthread_once(&init_once, initialize);
#if defined(__x86_64__)
    if (has_sse42) return ~hardware_register(~crc, bytes, count);
#endif
    return ~table_register(~crc, bytes, count);
}

uint32_t epochfs_crc32c_update_table(uint32_t crc, const void *bytes, size_t count) {
    pthread_once(&init_once, initialize);
    return ~table_register(~crc, bytes, count);
}

int epochfs_crc32c_hardware(void) {
    pthread_once(&init_once, initialize);
    return has_sse42;
}
