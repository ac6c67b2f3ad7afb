import Crypto

/// SHA-256 as Cordon writes it: lowercase hex, for ruleset digests, the decision log's hash
/// chain and table fingerprints. swift-crypto does the hashing (BoringSSL's, constant-time and
/// checked against the NIST vectors); this only names the text form everyone compares.
public enum ContentDigest {
    public static func hex(_ text: String) -> String { hex(bytes: Array(text.utf8)) }

    public static func hex(bytes: some Sequence<UInt8>) -> String {
        var hasher = Crypto.SHA256()
        hasher.update(data: Array(bytes))
        return hasher.finalize().map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]], as: UTF8.self)
        }.joined()
    }
}
