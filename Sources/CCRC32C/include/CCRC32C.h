#ifndef EPOCHFS_CCRC32C_H
#define EPOCHFS_CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) with Go's crc32.Update semantics: `crc` is a finished checksum
/// (0 to start), the register is inverted before and after, so chaining calls over a, then b
/// equals one call over a‖b. Uses SSE4.2 when the CPU has it, else a slicing-by-8 table.
uint32_t epochfs_crc32c_update(uint32_t crc, const void *bytes, size_t count);

/// The table implementation alone, so tests can compare it with the hardware path.
uint32_t epochfs_crc32c_update_table(uint32_t crc, const void *bytes, size_t count);

/// 1 when `epochfs_crc32c_update` uses the SSE4.2 crc32 instruction.
int epochfs_crc32c_hardware(void);

#endif
