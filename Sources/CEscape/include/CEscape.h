#ifndef EPOCHFS_CESCAPE_H
#define EPOCHFS_CESCAPE_H

#include <stddef.h>
#include <stdint.h>

/// Writes `count` bytes from `input` to `output` as text: printable ASCII (0x20...0x7e) other
/// than the backslash as itself, every other byte as `\xNN` (lowercase hex). `output` must
/// hold 4 * `count` bytes. Returns the number of bytes written.
size_t epochfs_escape_text(const uint8_t *input, size_t count, uint8_t *output);

#endif
