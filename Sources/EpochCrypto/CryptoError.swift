import COpenSSL

/// Failures of the crypto core. None of them carries key material.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A tag did not verify: wrong key, wrong associated data or tampered bytes.
    case authenticationFailed
    /// A key, nonce or buffer had the wrong size for the primitive.
    case invalidLength(what: String, expected: Int, actual: Int)
    /// OpenSSL reported an error outside authentication (allocation, provider, RNG).
    case openssl(operation: String, detail: String)

    public var description: String {
        switch self {
        case .authenticationFailed: "authentication failed"
        case let .invalidLength(what, expected, actual): "\(what) must be \(expected) bytes, got \(actual)"
        case let .openssl(operation, detail): "OpenSSL \(operation) failed: \(detail)"
        }
    }

    /// Builds an `.openssl` error from (and clears) the calling thread's OpenSSL error queue.
    static func fromQueue(_ operation: String) -> CryptoError {
        var detail = "unknown error"
        let code = ERR_get_error()
        if code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            detail = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        ERR_clear_error()
        return .openssl(operation: operation, detail: detail)
    }
}

@inline(__always)
func check(_ result: Int32, _ operation: String) throws {
    if result != 1 { throw CryptoError.fromQueue(operation) }
}
