import COpenSSL

/// AES-256-SIV (RFC 5297, OpenSSL's "AES-256-SIV"): deterministic authenticated encryption,
/// used for names, where the same plaintext under the same associated data must give the
/// same ciphertext. Output is the 16-byte synthetic IV followed by the ciphertext.
public final class AESSIVKey: Sendable {
    /// Two AES-256 keys: one for S2V (CMAC), one for CTR.
    public static let keySize = 64
    public static let tagSize = 16

    private let key: SecretBytes
    private let cipher: CipherHandle

    public init(_ key: SecretBytes) throws {
        guard key.count == Self.keySize else {
            throw CryptoError.invalidLength(what: "AES-256-SIV key", expected: Self.keySize, actual: key.count)
        }
        guard let fetched = EVP_CIPHER_fetch(nil, "AES-256-SIV", nil) else {
            throw CryptoError.fromQueue("EVP_CIPHER_fetch(AES-256-SIV)")
        }
        self.key = key
        self.cipher = CipherHandle(fetched)
    }

    deinit { EVP_CIPHER_free(cipher.pointer) }

    public func seal(_ plaintext: [UInt8], aad: [UInt8]) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Self.tagSize + plaintext.count)
        try run(encrypting: true) { (ctx) in
            var written: Int32 = 0
            try aad.withUnsafeBytes { (a) in
                try check(EVP_EncryptUpdate(ctx, nil, &written, a.bytePointer, Int32(a.count)), "SIV aad")
            }
            try plaintext.withUnsafeBytes { (p) in
                try output.withUnsafeMutableBytes { (o) in
                    let body = o.baseAddress!.assumingMemoryBound(to: UInt8.self) + Self.tagSize
                    // SIV takes the whole message in one update; final adds nothing.
                    try check(EVP_EncryptUpdate(ctx, body, &written, p.bytePointer, Int32(p.count)), "SIV encrypt")
                    try check(EVP_EncryptFinal_ex(ctx, body + Int(written), &written), "SIV final")
                    try check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(Self.tagSize), o.baseAddress),
                              "SIV get tag")
                }
            }
        }
        return output
    }

    public func open(_ sealed: [UInt8], aad: [UInt8]) throws -> [UInt8] {
        guard sealed.count >= Self.tagSize else { throw CryptoError.authenticationFailed }
        var output = [UInt8](repeating: 0, count: sealed.count - Self.tagSize)
        let verified = try run(encrypting: false) { (ctx) throws -> Bool in
            var written: Int32 = 0
            try sealed.withUnsafeBytes { (s) in
                let tag = UnsafeMutableRawPointer(mutating: s.baseAddress!)
                try check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(Self.tagSize), tag), "SIV set tag")
            }
            try aad.withUnsafeBytes { (a) in
                try check(EVP_DecryptUpdate(ctx, nil, &written, a.bytePointer, Int32(a.count)), "SIV aad")
            }
            return sealed.withUnsafeBytes { s in
                output.withUnsafeMutableBytes { o in
                    let body = UnsafeRawBufferPointer(rebasing: s[Self.tagSize...])
                    var out = o.baseAddress?.assumingMemoryBound(to: UInt8.self)
                    var unused: UInt8 = 0
                    if out == nil { out = withUnsafeMutablePointer(to: &unused) { $0 } }
                    // The tag is checked while decrypting; final reports the verdict again.
                    guard EVP_DecryptUpdate(ctx, out, &written, body.bytePointer, Int32(body.count)) == 1 else { return false }
                    return EVP_DecryptFinal_ex(ctx, &unused, &written) == 1
                }
            }
        }
        guard verified else {
            output.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) }
            ERR_clear_error()
            throw CryptoError.authenticationFailed
        }
        return output
    }

    private func run<R>(encrypting: Bool, _ body: (OpaquePointer) throws -> R) throws -> R {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        try key.withUnsafeBytes { (raw) in
            try check(EVP_CipherInit_ex2(ctx, cipher.pointer, raw.bytePointer, nil, encrypting ? 1 : 0, nil),
                      "EVP_CipherInit_ex2(AES-256-SIV)")
        }
        return try body(ctx)
    }
}

/// A fetched OpenSSL cipher implementation; immutable and shareable across threads.
struct CipherHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}
