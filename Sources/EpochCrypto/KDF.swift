import COpenSSL

/// HKDF-SHA256 (RFC 5869), extract and expand.
public enum HKDF {
    public static func sha256(key: SecretBytes, salt: [UInt8], info: [UInt8], count: Int) throws -> SecretBytes {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nil) else { throw CryptoError.fromQueue("EVP_PKEY_CTX_new_id(HKDF)") }
        defer { EVP_PKEY_CTX_free(ctx) }
        try check(EVP_PKEY_derive_init(ctx), "EVP_PKEY_derive_init(HKDF)")
        try check(EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()), "HKDF digest")
        try salt.withUnsafeBytes { (s) in
            try check(EVP_PKEY_CTX_set1_hkdf_salt(ctx, s.bytePointer, Int32(s.count)), "HKDF salt")
        }
        try key.withUnsafeBytes { (k) in
            try check(EVP_PKEY_CTX_set1_hkdf_key(ctx, k.bytePointer, Int32(k.count)), "HKDF key")
        }
        try info.withUnsafeBytes { (i) in
            try check(EVP_PKEY_CTX_add1_hkdf_info(ctx, i.bytePointer, Int32(i.count)), "HKDF info")
        }
        return try SecretBytes(count: count) { (out) in
            var length = count
            try check(EVP_PKEY_derive(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length), "EVP_PKEY_derive(HKDF)")
        }
    }
}

/// scrypt (RFC 7914) for passphrases.
public struct ScryptParameters: Equatable, Sendable {
    public var log2N: UInt8
    public var r: UInt32
    public var p: UInt32

    public init(log2N: UInt8, r: UInt32, p: UInt32) {
        self.log2N = log2N
        self.r = r
        self.p = p
    }

    /// N = 2^16, r = 8, p = 1: 64 MiB and a fraction of a second, as gocryptfs uses.
    public static let standard = ScryptParameters(log2N: 16, r: 8, p: 1)

    /// Memory scrypt needs: 128 · r · N bytes (plus a little for p).
    public var memoryBytes: UInt64 { 128 * UInt64(r) * (UInt64(1) << UInt64(log2N)) * UInt64(max(p, 1)) }

    public func derive(passphrase: SecretBytes, salt: [UInt8], count: Int) throws -> SecretBytes {
        guard log2N >= 1, log2N < 40, r >= 1, p >= 1 else {
            throw CryptoError.openssl(operation: "scrypt", detail: "parameters out of range (log2N \(log2N), r \(r), p \(p))")
        }
        let maxMemory = memoryBytes + (1 << 20)
        return try SecretBytes(count: count) { (out) in
            try passphrase.withUnsafeBytes { (pass) in
                try salt.withUnsafeBytes { (s) in
                    try check(EVP_PBE_scrypt(pass.baseAddress!.assumingMemoryBound(to: CChar.self), pass.count,
                                             s.bytePointer, s.count,
                                             UInt64(1) << UInt64(log2N), UInt64(r), UInt64(p), maxMemory,
                                             out.baseAddress!.assumingMemoryBound(to: UInt8.self), count),
                              "EVP_PBE_scrypt")
                }
            }
        }
    }
}
