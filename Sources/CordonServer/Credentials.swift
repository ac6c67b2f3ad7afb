import Crypto
import Foundation

/// Tokens, enrollment secrets and host credentials: random, shown once, stored only as hashes.
///
/// A prefix names the kind, so a secret pasted in the wrong place is refused for what it is, and
/// secret scanners can find one in a repository.
public enum Credential {
    public enum Kind: String, Sendable {
        case apiToken = "cordon_api_"
        case enrollSecret = "cordon_enroll_"
        case host = "cordon_host_"
        /// A console session's cookie and its CSRF token: never typed by anyone, never a bearer.
        case session = "cordon_session_"
        case csrf = "cordon_csrf_"
    }

    /// 32 random bytes, base64url without padding, after the kind's prefix.
    public static func generate(_ kind: Kind) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return kind.rawValue + text
    }

    /// What the database keeps: the SHA-256 of the secret (hex). The secrets are 256-bit random,
    /// so a plain hash suffices; a slow password hash would only slow every request.
    public static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    public static func kind(of secret: String) -> Kind? {
        [Kind.apiToken, .enrollSecret, .host, .session, .csrf].first { secret.hasPrefix($0.rawValue) }
    }
}
