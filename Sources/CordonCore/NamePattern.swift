/// A ruleset entry that names hosts rather than addresses: `api.snapcraft.io`, `*.example.com`
/// (exactly one more label) or `**.example.com` (one or more). Neither wildcard matches the bare
/// domain. A wildcard needs at least two labels after it: `*.com` would allow a whole top-level
/// domain, which no allow-list means.
public enum NamePattern: Hashable, Sendable, CustomStringConvertible {
    case exact(String)
    case oneLabel(under: String)
    case anyDepth(under: String)

    /// Why a text is not a name pattern, said so a ruleset error can quote it.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: String) throws(Invalid) {
        let name = text.lowercased()
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        var labels = trimmed.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var wildcard: String?
        if let first = labels.first, first == "*" || first == "**" {
            wildcard = first
            labels.removeFirst()
            guard labels.count >= 2 else { throw Invalid(description: "'\(text)': a wildcard needs at least two labels after it (\(first).example.com)") }
        }
        guard !labels.isEmpty, trimmed.utf8.count <= 253 else { throw Invalid(description: "'\(text)': a name is 1-253 characters") }
        for label in labels {
            guard !label.isEmpty else { throw Invalid(description: "'\(text)': an empty label (two dots in a row, or a leading dot)") }
            guard label.utf8.count <= 63 else { throw Invalid(description: "'\(text)': the label '\(label.prefix(16))…' is longer than 63 characters") }
            if label.contains("*") { throw Invalid(description: "'\(text)': a wildcard may only be the whole first label ('*.' or '**.')") }
            guard label.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }) else {
                throw Invalid(description: "'\(text)': the label '\(label)' holds a character other than letters, digits, '-' and '_' (write IDNs in punycode, xn--…)")
            }
            guard !label.hasPrefix("-"), !label.hasSuffix("-") else { throw Invalid(description: "'\(text)': the label '\(label)' starts or ends with '-'") }
        }
        guard labels.count >= 2 || wildcard != nil else { throw Invalid(description: "'\(text)': expected a fully qualified name (host.example.com)") }
        guard let last = labels.last, !last.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw Invalid(description: "'\(text)': the last label is a number; an address is written as an address")
        }
        let base = labels.joined(separator: ".")
        switch wildcard {
        case "*": self = .oneLabel(under: base)
        case "**": self = .anyDepth(under: base)
        default: self = .exact(base)
        }
    }

    /// `name`: as the name table keeps names (lower case, no final dot).
    public func matches(_ name: String) -> Bool {
        switch self {
        case .exact(let exact):
            return name == exact
        case .oneLabel(let base):
            guard let head = Self.head(of: name, under: base) else { return false }
            return !head.contains(".")
        case .anyDepth(let base):
            return Self.head(of: name, under: base) != nil
        }
    }

    /// What `name` has before `.base`, if anything.
    private static func head(of name: String, under base: String) -> Substring? {
        guard name.utf8.count > base.utf8.count + 1, name.hasSuffix("." + base) else { return nil }
        return name.dropLast(base.count + 1)
    }

    public var description: String {
        switch self {
        case .exact(let name): name
        case .oneLabel(let base): "*." + base
        case .anyDepth(let base): "**." + base
        }
    }
}
