#if canImport(Glibc)
import Glibc
#endif

/// Address family of a flow. The raw values are what `--json` prints.
public enum AddressFamily: String, Sendable, Codable, CaseIterable {
    case ipv4
    case ipv6

    /// Number of bits in an address of this family.
    public var bitWidth: Int { self == .ipv4 ? 32 : 128 }
}

/// An IPv4 or IPv6 address held as two integers, so that hashing and masking on the per-event path
/// cost a few instructions and no allocation.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: AddressFamily
    /// IPv6: the first 64 bits. IPv4: zero.
    public let high: UInt64
    /// IPv6: the last 64 bits. IPv4: the address in the low 32 bits.
    public let low: UInt64

    public init(family: AddressFamily, high: UInt64, low: UInt64) {
        self.family = family
        self.high = family == .ipv4 ? 0 : high
        self.low = family == .ipv4 ? low & 0xFFFF_FFFF : low
    }

    /// An IPv4 address from its value in host byte order (192.0.2.1 is 0xC000_0201).
    public init(ipv4 value: UInt32) {
        self.init(family: .ipv4, high: 0, low: UInt64(value))
    }

    /// An address from its network-order bytes: 4 for IPv4, 16 for IPv6.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        switch bytes.count {
        case 4:
            self.init(ipv4: bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let high = bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = bytes.dropFirst(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            self.init(family: .ipv6, high: high, low: low)
        default:
            return nil
        }
    }

    /// Parses dotted-quad IPv4 or any RFC 4291 IPv6 text form.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ipv4: UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        self.init(bytes: bytes)
    }

    /// The same from UTF-8 bytes, with no `String` made: the server reads two addresses from
    /// each of a tier's 2M stored flow rows. Dotted quads are read by hand, exactly as
    /// `inet_pton` reads them (no leading zeros); anything else goes to `inet_pton` from a
    /// terminated copy on the stack.
    public init?(utf8 text: UnsafeBufferPointer<UInt8>) {
        if let value = Self.dottedQuad(text) {
            self.init(ipv4: value)
            return
        }
        // The longest IPv6 text form is 45 bytes; a NUL inside would end the copy early.
        guard text.count < Int(INET6_ADDRSTRLEN), !text.contains(0) else { return nil }
        var v6 = in6_addr()
        let parsed = withUnsafeTemporaryAllocation(of: CChar.self, capacity: text.count + 1) { copy in
            for (index, byte) in text.enumerated() { copy[index] = CChar(bitPattern: byte) }
            copy[text.count] = 0
            return inet_pton(AF_INET6, copy.baseAddress!, &v6) == 1
        }
        guard parsed else { return nil }
        self.init(bytes: withUnsafeBytes(of: &v6) { Array($0) })
    }

    private static func dottedQuad(_ text: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var value: UInt32 = 0, part: UInt32 = 0, digits = 0, parts = 0
        for byte in text {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                part = 0
                digits = 0
                parts += 1
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                guard digits == 0 || part != 0 else { return nil }
                part = part * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                guard part <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return value << 8 | part
    }

    /// Two words per address: direction is decided by set lookups on every event.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(high ^ (family == .ipv6 ? 0x8000_0000_0000_0000 : 0))
        hasher.combine(low)
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch family {
        case .ipv4:
            return (0..<4).map { UInt8(truncatingIfNeeded: low >> (24 - 8 * $0)) }
        case .ipv6:
            return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        }
    }

    public var description: String {
        var bytes = self.bytes
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let af = family == .ipv4 ? AF_INET : AF_INET6
        _ = inet_ntop(af, &bytes, &buffer, socklen_t(buffer.count))
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// The address with all bits past `prefixLength` cleared.
    public func masked(to prefixLength: Int) -> IPAddress {
        switch family {
        case .ipv4:
            let mask: UInt64 = prefixLength <= 0 ? 0 : (0xFFFF_FFFF << UInt64(32 - min(prefixLength, 32))) & 0xFFFF_FFFF
            return IPAddress(ipv4: UInt32(low & mask))
        case .ipv6:
            let highMask: UInt64 = prefixLength <= 0 ? 0 : prefixLength >= 64 ? ~0 : ~0 << UInt64(64 - prefixLength)
            let lowMask: UInt64 = prefixLength <= 64 ? 0 : prefixLength >= 128 ? ~0 : ~0 << UInt64(128 - prefixLength)
            return IPAddress(family: .ipv6, high: high & highMask, low: low & lowMask)
        }
    }

    public var isLoopback: Bool {
        switch family {
        case .ipv4: return low >> 24 == 127
        case .ipv6: return high == 0 && low == 1 || isIPv4Mapped && IPAddress(ipv4: UInt32(low & 0xFFFF_FFFF)).isLoopback
        }
    }

    /// 0.0.0.0 or :: — the source of a DHCP discover before the host has an address.
    public var isUnspecified: Bool { high == 0 && low == 0 }

    public var isMulticast: Bool {
        switch family {
        case .ipv4: return low >> 28 == 0xE
        case .ipv6: return high >> 56 == 0xFF
        }
    }

    /// 255.255.255.255, the limited broadcast address.
    public var isLimitedBroadcast: Bool { family == .ipv4 && low == 0xFFFF_FFFF }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        if lhs.family != rhs.family { return lhs.family == .ipv4 }
        return (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

/// An address with a prefix length: a single address when the length is the family's full width,
/// otherwise the covering network that several remotes were rolled up into.
public struct IPPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let length: UInt8

    /// One address, not a rolled-up range.
    public var isHost: Bool { Int(length) == address.family.bitWidth }

    public init(_ address: IPAddress, length: Int? = nil) {
        let width = address.family.bitWidth
        let length = max(0, min(length ?? width, width))
        self.address = address.masked(to: length)
        self.length = UInt8(length)
    }

    /// Parses `ADDRESS` or `ADDRESS/LENGTH`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        if parts.count == 2 {
            guard let length = StrictDecimal.parse(parts[1], as: Int.self), (0...address.family.bitWidth).contains(length) else { return nil }
            self.init(address, length: length)
        } else {
            self.init(address)
        }
    }

    /// `ADDRESS` or `ADDRESS/LENGTH` from UTF-8 bytes, as `init?(_:)` reads it.
    public init?(utf8 text: UnsafeBufferPointer<UInt8>) {
        guard let slash = text.firstIndex(of: UInt8(ascii: "/")) else {
            guard let address = IPAddress(utf8: text) else { return nil }
            self.init(address)
            return
        }
        guard let address = IPAddress(utf8: UnsafeBufferPointer(rebasing: text[..<slash])),
              let length = StrictDecimal.parse(utf8: UnsafeBufferPointer(rebasing: text[(slash + 1)...]), as: Int.self),
              length <= address.family.bitWidth else { return nil }
        self.init(address, length: length)
    }

    public var family: AddressFamily { address.family }

    /// True when this is one address, not a rolled-up network.
    public var isSingleAddress: Bool { Int(length) == address.family.bitWidth }

    public func contains(_ other: IPAddress) -> Bool {
        other.family == address.family && other.masked(to: Int(length)) == address
    }

    /// True when every address of `other` (a single address or a rolled-up network) is in this one.
    public func covers(_ other: IPPrefix) -> Bool {
        length <= other.length && contains(other.address)
    }

    /// A single address prints bare; a network prints in CIDR notation.
    public var description: String { isSingleAddress ? address.description : "\(address)/\(length)" }

    public static func < (lhs: IPPrefix, rhs: IPPrefix) -> Bool {
        (lhs.address, lhs.length) < (rhs.address, rhs.length)
    }
}

/// Decimal numbers as a person writes them in a ruleset or config: ASCII digits only, no sign,
/// no leading zero. Swift's `Int("+24")` and `Int("024")` both give 24, which would let `/+24`
/// or `tcp/022` through as if they were meant.
public enum StrictDecimal {
    public static func parse<T: FixedWidthInteger>(_ text: some StringProtocol, as type: T.Type = T.self) -> T? {
        let digits = text.utf8
        guard let first = digits.first, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              first != UInt8(ascii: "0") || digits.count == 1 else { return nil }
        return T(text, radix: 10)
    }

    /// The same from UTF-8 bytes: digits only, no leading zero, no overflow. Inlinable so the
    /// server's row reader gets it specialised (generic, it was a third of reading a row).
    @inlinable
    public static func parse<T: FixedWidthInteger>(utf8 text: UnsafeBufferPointer<UInt8>, as type: T.Type = T.self) -> T? {
        guard let first = text.first, first != UInt8(ascii: "0") || text.count == 1 else { return nil }
        var value: T = 0
        for byte in text {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
            let (sum, carry) = shifted.addingReportingOverflow(T(byte - UInt8(ascii: "0")))
            guard !overflow && !carry else { return nil }
            value = sum
        }
        return value
    }
}

extension IPAddress {
    /// `::ffff:a.b.c.d`: an IPv4 address written as IPv6. Packets never carry it on the wire of
    /// an `inet` table (IPv4 packets are matched as IPv4), so a rule for it would match nothing.
    public var isIPv4Mapped: Bool { family == .ipv6 && high == 0 && low >> 32 == 0xFFFF }
}
