// Text escaping for `epochfs wal dump`, its hottest loop after decryption: a run of plain
// bytes is checked and copied sixteen at a time with SSE2 (part of every x86_64 CPU).

#include "CEscape.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline size_t escape_byte(uint8_t byte, uint8_t *output) {
    static const char digits[] = "0123456789abcdef";
    if (byte >= 0x20 && byte < 0x7f && byte != '\\') {
        output[0] = byte;
        return 1;
    }
    output[0] = '\\';
    output[1] = 'x';
    output[2] = (uint8_t)digits[byte >> 4];
    output[3] = (uint8_t)digits[byte & 15];
    return 4;
}

size_t epochfs_escape_text(const uint8_t *input, size_t count, uint8_t *output) {
    size_t in = 0, out = 0;
#if defined(__SSE2__)
    // SSE2 compares bytes as signed: flipping the top bit turns the unsigned range checks
    // into signed ones.
    const __m128i top = _mm_set1_epi8((char)0x80);
    const __m128i below = _mm_set1_epi8((char)(0x20 ^ 0x80));
    const __m128i above = _mm_set1_epi8((char)(0x7e ^ 0x80));
    const __m128i backslash = _mm_set1_epi8('\\');
    while (in + 16 <= count) {
        __m128i block = _mm_loadu_si128((const __m128i *)(input + in));
        __m128i shifted = _mm_xor_si128(block, top);
        __m128i escaped = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(shifted, below), _mm_cmpgt_epi8(shifted, above)),
                                       _mm_cmpeq_epi8(block, backslash));
        // Store all sixteen, keep the plain ones before the first byte to escape. The room
        // for 4 * count bytes covers the store: out <= 4 * in and in + 16 <= count.
        _mm_storeu_si128((__m128i *)(output + out), block);
        int mask = _mm_movemask_epi8(escaped);
        if (mask == 0) {
            in += 16;
            out += 16;
            continue;
        }
        size_t plain = (size_t)__builtin_ctz((unsigned)mask);
        in += plain;
        out += plain;
        out += escape_byte(input[in++], output + out);
    }
#endif
    while (in < count) out += escape_byte(input[in++], output + out);
    return out;
}
