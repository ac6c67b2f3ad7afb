import Foundation

/// Tag keys and values as `--tags k=v,...` gives them.
public enum Tags {
    public static func validKey(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= 63 && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) }
    }

    /// `k=v,k2=v2`; an error names the item.
    public static func parse(_ text: String) throws -> [String: String] {
        var tags: [String: String] = [:]
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, validKey(parts[0]), !parts[1].isEmpty, parts[1].utf8.count <= 255 else {
                throw WireError("expected key=value (key: letters, digits, '-', '_', '.', '/')", field: "tags '\(item)'")
            }
            guard tags[parts[0]] == nil else { throw WireError("given twice", field: "tags '\(parts[0])'") }
            tags[parts[0]] = parts[1]
        }
        return tags
    }
}
