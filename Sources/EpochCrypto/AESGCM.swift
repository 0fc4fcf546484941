import COpenSSL
import Synchronization

/// An AES-256-GCM key with its key schedule expanded once. Safe to use from many threads at
/// once: each call borrows an initialised OpenSSL context from a small pool and returns it,
/// so no context is allocated and no key is expanded per message.
public final class AESGCMKey: Sendable {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16

    private let template: CipherContext
    private let encryptPool = ContextPool()
    private let decryptPool = ContextPool()

    public init(_ key: SecretBytes) throws {
        guard key.count == Self.keySize else {
            throw CryptoError.invalidLength(what: "AES-256-GCM key", expected: Self.keySize, actual: key.count)
        }
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_new") }
        template = CipherContext(ctx)
        try key.withUnsafeBytes { (raw) in
            try check(EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), nil,
                                        raw.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, 1),
                      "EVP_CipherInit_ex(aes-256-gcm)")
        }
    }

    deinit {
        EVP_CIPHER_CTX_free(template.pointer)
    }

    /// Encrypts `plaintext` into `output`, which must hold `plaintext.count + 16` bytes:
    /// the ciphertext followed by the tag.
    public func seal(nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
                     plaintext: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        try checkLengths(nonce: nonce, message: plaintext.count, output: output.count, expectedOutput: plaintext.count + Self.tagSize)
        try withContext(encrypting: true) { (ctx) in
            try check(EVP_EncryptInit_ex(ctx, nil, nil, nil, nonce.bytePointer), "EVP_EncryptInit_ex(nonce)")
            var written: Int32 = 0
            if aad.count > 0 {
                try check(EVP_EncryptUpdate(ctx, nil, &written, aad.bytePointer, Int32(aad.count)), "EVP_EncryptUpdate(aad)")
            }
            let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var total: Int32 = 0
            if plaintext.count > 0 {
                try check(EVP_EncryptUpdate(ctx, out, &written, plaintext.bytePointer, Int32(plaintext.count)), "EVP_EncryptUpdate")
                total = written
            }
            try check(EVP_EncryptFinal_ex(ctx, out + Int(total), &written), "EVP_EncryptFinal_ex")
            try check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(Self.tagSize), out + plaintext.count),
                      "EVP_CTRL_GCM_GET_TAG")
        }
    }

    /// Verifies and decrypts `sealed` (ciphertext followed by tag) into `output`, which must hold
    /// `sealed.count - 16` bytes. On failure `output` is zeroed: unauthenticated plaintext never leaks.
    public func open(nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
                     sealed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard sealed.count >= Self.tagSize else {
            throw CryptoError.invalidLength(what: "sealed message", expected: Self.tagSize, actual: sealed.count)
        }
        let bodyCount = sealed.count - Self.tagSize
        try checkLengths(nonce: nonce, message: bodyCount, output: output.count, expectedOutput: bodyCount)
        let verified = try withContext(encrypting: false) { (ctx) throws -> Bool in
            try check(EVP_DecryptInit_ex(ctx, nil, nil, nil, nonce.bytePointer), "EVP_DecryptInit_ex(nonce)")
            var written: Int32 = 0
            if aad.count > 0 {
                try check(EVP_DecryptUpdate(ctx, nil, &written, aad.bytePointer, Int32(aad.count)), "EVP_DecryptUpdate(aad)")
            }
            if bodyCount > 0 {
                try check(EVP_DecryptUpdate(ctx, output.baseAddress!.assumingMemoryBound(to: UInt8.self), &written,
                                            sealed.bytePointer, Int32(bodyCount)), "EVP_DecryptUpdate")
            }
            let tag = UnsafeMutableRawPointer(mutating: sealed.baseAddress! + bodyCount)
            try check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(Self.tagSize), tag), "EVP_CTRL_GCM_SET_TAG")
            // GCM's final step only checks the tag; it writes no bytes.
            var unused: UInt8 = 0
            return EVP_DecryptFinal_ex(ctx, &unused, &written) == 1
        }
        guard verified else {
            if output.count > 0 { output.initializeMemory(as: UInt8.self, repeating: 0) }
            ERR_clear_error()
            throw CryptoError.authenticationFailed
        }
    }

    // MARK: - Conveniences over arrays

    public func seal(nonce: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: plaintext.count + Self.tagSize)
        try nonce.withUnsafeBytes { (n) in
            try aad.withUnsafeBytes { (a) in
                try plaintext.withUnsafeBytes { (p) in
                    try output.withUnsafeMutableBytes { (o) in
                        try seal(nonce: n, aad: a, plaintext: p, into: o)
                    }
                }
            }
        }
        return output
    }

    public func open(nonce: [UInt8], aad: [UInt8], sealed: [UInt8]) throws -> [UInt8] {
        guard sealed.count >= Self.tagSize else { throw CryptoError.authenticationFailed }
        var output = [UInt8](repeating: 0, count: sealed.count - Self.tagSize)
        try nonce.withUnsafeBytes { (n) in
            try aad.withUnsafeBytes { (a) in
                try sealed.withUnsafeBytes { (s) in
                    try output.withUnsafeMutableBytes { (o) in
                        try open(nonce: n, aad: a, sealed: s, into: o)
                    }
                }
            }
        }
        return output
    }

    // MARK: - Context pool

    private func checkLengths(nonce: UnsafeRawBufferPointer, message: Int, output: Int, expectedOutput: Int) throws {
        guard nonce.count == Self.nonceSize else {
            throw CryptoError.invalidLength(what: "AES-GCM nonce", expected: Self.nonceSize, actual: nonce.count)
        }
        guard output == expectedOutput else {
            throw CryptoError.invalidLength(what: "output buffer", expected: expectedOutput, actual: output)
        }
        // OpenSSL's EVP lengths are C ints.
        guard message <= Int(Int32.max) - Self.tagSize else {
            throw CryptoError.invalidLength(what: "message", expected: Int(Int32.max) - Self.tagSize, actual: message)
        }
    }

    private func withContext<R>(encrypting: Bool, _ body: (OpaquePointer) throws -> R) throws -> R {
        let pool = encrypting ? encryptPool : decryptPool
        let ctx = try pool.take() ?? freshContext(encrypting: encrypting)
        defer { pool.give(ctx) }
        return try body(ctx)
    }

    private func freshContext(encrypting: Bool) throws -> OpaquePointer {
        guard let fresh = EVP_CIPHER_CTX_new() else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_new") }
        guard EVP_CIPHER_CTX_copy(fresh, template.pointer) == 1 else {
            EVP_CIPHER_CTX_free(fresh)
            throw CryptoError.fromQueue("EVP_CIPHER_CTX_copy")
        }
        // The copy keeps the expanded key; only the direction changes here.
        guard EVP_CipherInit_ex(fresh, nil, nil, nil, nil, encrypting ? 1 : 0) == 1 else {
            EVP_CIPHER_CTX_free(fresh)
            throw CryptoError.fromQueue("EVP_CipherInit_ex(direction)")
        }
        return fresh
    }
}

/// Idle keyed contexts of one direction. One thread at a time, the common case, takes and
/// returns the context in `spare` (its address; 0 when empty) with one atomic exchange each;
/// threads that overlap fall back to the locked list.
private final class ContextPool: Sendable {
    private let spare = Atomic<UInt>(0)
    private let others = Mutex<[CipherContext]>([])

    func take() -> OpaquePointer? {
        OpaquePointer(bitPattern: spare.exchange(0, ordering: .acquiring)) ?? others.withLock { $0.popLast()?.pointer }
    }

    func give(_ ctx: OpaquePointer) {
        let address = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(ctx)))
        guard !spare.compareExchange(expected: 0, desired: address, ordering: .releasing).exchanged else { return }
        others.withLock { $0.append(CipherContext(ctx)) }
    }

    deinit {
        if let ctx = OpaquePointer(bitPattern: spare.load(ordering: .acquiring)) { EVP_CIPHER_CTX_free(ctx) }
        for ctx in others.withLock({ $0 }) { EVP_CIPHER_CTX_free(ctx.pointer) }
    }
}

/// An OpenSSL cipher context owned by one AESGCMKey; used by one thread at a time.
struct CipherContext: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}

extension UnsafeRawBufferPointer {
    /// The base address as `unsigned char *`; a dummy non-null address for empty buffers,
    /// which OpenSSL never reads.
    var bytePointer: UnsafePointer<UInt8> {
        if let base = baseAddress { return base.assumingMemoryBound(to: UInt8.self) }
        return UnsafePointer(bitPattern: 1)!
    }
}
