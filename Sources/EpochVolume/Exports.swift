// The volume's API speaks in EpochIO's terms (descriptors, `SystemError`, `BackingIO`), so
// whoever uses the volume sees them too.
@_exported import EpochIO
