/// A named nftables set of concatenated intervals: `address . protocol . port range` or
/// `address . icmp type . icmp code`.
///
/// A lookup in such a set (the kernel's pipapo algorithm) grows slowly with its size (measured:
/// +0.5 µs per packet at 10,000 elements, +2.6 µs at 100,000), where one rule per entry would
/// grow linearly; that is why allow rules become elements rather than rules. What can be said
/// exactly — a prefix, one protocol, one port — goes instead into hash sets, one per prefix
/// length (`exact`), whose lookup does not grow at all; ranges stay here. The kernel refuses
/// overlapping intervals, so elements are built disjoint (`FirewallSet.disjoint`).
public struct FirewallSet: Hashable, Sendable {
    public enum Field: String, Hashable, Sendable {
        case ipv4Address = "ipv4_addr", ipv6Address = "ipv6_addr"
        case transport = "inet_proto", port = "inet_service"
        case icmpType = "icmp_type", icmpCode = "icmp_code"
        case icmpv6Type = "icmpv6_type", icmpv6Code = "icmpv6_code"
        /// IPv4 or IPv6 (`meta nfproto`): the key of the confirmation switch.
        case family = "nf_proto"

        /// Bytes of the value; in a concatenation each field occupies a multiple of 4.
        public var length: Int {
            switch self {
            case .ipv4Address: return 4
            case .ipv6Address: return 16
            case .port: return 2
            case .transport, .icmpType, .icmpCode, .icmpv6Type, .icmpv6Code, .family: return 1
            }
        }

        /// nft's number for the datatype: stored with the set so that `nft list` prints the
        /// elements as addresses and names rather than hex.
        public var typeID: UInt32 {
            switch self {
            case .family: return 2
            case .ipv4Address: return 7
            case .ipv6Address: return 8
            case .transport: return 12
            case .port: return 13
            case .icmpType: return 14
            case .icmpv6Type: return 29
            case .icmpCode: return 32
            case .icmpv6Code: return 33
            }
        }

        /// How nft names a protocol in a rule or an element.
        public static func transportName(_ number: UInt8) -> String {
            switch number {
            case IPProtocolNumber.tcp: return "tcp"
            case IPProtocolNumber.udp: return "udp"
            case IPProtocolNumber.icmp: return "icmp"
            case IPProtocolNumber.icmpv6: return "ipv6-icmp"
            case IPProtocolNumber.sctp: return "sctp"
            case IPProtocolNumber.dccp: return "dccp"
            case IPProtocolNumber.udplite: return "udplite"
            default: return String(number)
            }
        }
    }

    /// One field's inclusive interval. Addresses as 128-bit integers (IPv4 in the low 32 bits).
    public struct Span: Hashable, Sendable {
        public var low: UInt128
        public var high: UInt128
        public init(_ low: UInt128, _ high: UInt128) {
            self.low = low
            self.high = high
        }
        public init(_ value: UInt128) { self.init(value, value) }
    }

    public struct Element: Hashable, Sendable {
        /// One span per field of the set, in order.
        public var spans: [Span]
        /// Seconds this element lives, in a `dynamic` set (the rest of its DNS answer's life).
        public var timeout: Int64?
        public init(_ spans: [Span], timeout: Int64? = nil) {
            self.spans = spans
            self.timeout = timeout
        }
    }

    public var name: String
    public var fields: [Field]
    public var elements: [Element]
    /// Shown above the set in the rendering: which rules fill it.
    public var comment: String?
    /// Seconds after which every element disappears by itself (a set with the `timeout` flag);
    /// nil for the allow sets, which never expire.
    public var elementTimeout: Int64?
    /// Single values only, looked up by hash: a prefix length's worth of allow rules.
    public var exact: Bool
    /// Filled while enforcing, each element with a timeout of its own (the addresses of DNS
    /// answers for name entries): the table's rendering holds only those known when it is made.
    public var dynamic: Bool

    public init(name: String, fields: [Field], elements: [Element], comment: String? = nil, elementTimeout: Int64? = nil,
                exact: Bool = false, dynamic: Bool = false) {
        self.dynamic = dynamic
        self.name = name
        self.fields = fields
        self.elements = elements
        self.comment = comment
        self.elementTimeout = elementTimeout
        self.exact = exact
    }

    /// Intervals (pipapo); the others hold single values (hash).
    public var isInterval: Bool { elementTimeout == nil && !exact && !dynamic }
    /// Elements expire: the set carries the kernel's timeout flag.
    public var hasTimeouts: Bool { elementTimeout != nil || dynamic }

    /// The key's length in bytes as the kernel stores it: one field at its own size, a
    /// concatenation in 4-byte slots.
    public var keyLength: Int {
        fields.count == 1 ? fields[0].length : fields.reduce(0) { $0 + ($1.length + 3) / 4 * 4 }
    }

    /// nft's type number of the concatenation: each field's type shifted in 6 bits at a time.
    public var keyTypeID: UInt32 { fields.reduce(0) { $0 << 6 | $1.typeID } }

    /// Network-order bytes of one bound of an element, each field padded to 4 bytes.
    public func keyBytes(_ element: Element, high: Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(keyLength)
        for (field, span) in zip(fields, element.spans) {
            let value = high ? span.high : span.low
            for index in (0..<field.length).reversed() { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
            if fields.count > 1 { bytes += repeatElement(0, count: (field.length + 3) / 4 * 4 - field.length) }
        }
        return bytes
    }

    var nftLines: [String] {
        var lines: [String] = []
        if let comment { lines.append("# \(comment)") }
        lines.append("set \(name) {")
        lines.append("\ttype \(fields.map(\.rawValue).joined(separator: " . "))")
        if isInterval { lines.append("\tflags interval") }
        if hasTimeouts { lines.append("\tflags timeout") }
        if !elements.isEmpty {
            lines.append("\telements = {")
            for (index, element) in elements.enumerated() {
                lines.append("\t\t" + elementText(element) + (index == elements.count - 1 ? "" : ","))
            }
            lines.append("\t}")
        }
        lines.append("}")
        return lines
    }

    public func elementText(_ element: Element) -> String {
        keyText(element) + (element.timeout.map { " timeout \($0)s" } ?? "")
    }

    private func keyText(_ element: Element) -> String {
        zip(fields, element.spans).map { field, span in
            switch field {
            case .ipv4Address, .ipv6Address:
                return Self.addressText(span, family: field == .ipv4Address ? .ipv4 : .ipv6)
            case .transport:
                return Self.transportText(span)
            case .family:
                return (span.low == 2 ? "ipv4" : "ipv6") + (elementTimeout.map { " timeout \($0)s" } ?? "")
            default:
                return span.low == span.high ? "\(span.low)" : "\(span.low)-\(span.high)"
            }
        }.joined(separator: " . ")
    }

    private static func transportText(_ span: Span) -> String {
        span.low == span.high ? Field.transportName(UInt8(span.low)) : "\(span.low)-\(span.high)"
    }

    /// A prefix when the interval is one (as nft prints it), otherwise `low-high`.
    static func addressText(_ span: Span, family: AddressFamily) -> String {
        let width = family.bitWidth
        let low = IPAddress(value: span.low, family: family), high = IPAddress(value: span.high, family: family)
        if span.low == span.high { return low.description }
        if span.low == 0 && span.high == IPAddress.maximum(family) { return "\(low)/0" }
        let size = span.high - span.low + 1
        if size != 0, size & (size - 1) == 0, span.low & (size - 1) == 0 {
            return "\(low)/\(width - size.trailingZeroBitCount)"
        }
        return "\(low)-\(high)"
    }
}

extension IPAddress {
    /// The address as one integer (IPv4 in the low 32 bits): interval arithmetic for sets.
    public var value: UInt128 { UInt128(high) << 64 | UInt128(low) }

    public init(value: UInt128, family: AddressFamily) {
        self.init(family: family, high: UInt64(truncatingIfNeeded: value >> 64), low: UInt64(truncatingIfNeeded: value))
    }

    static func maximum(_ family: AddressFamily) -> UInt128 { family == .ipv4 ? 0xFFFF_FFFF : UInt128.max }
}

extension IPPrefix {
    /// The first and last address of the prefix, as integers.
    public var span: FirewallSet.Span {
        let hostBits = family.bitWidth - Int(length)
        let low = address.value
        let size: UInt128 = hostBits >= 128 ? UInt128.max : (UInt128(1) << hostBits) - 1
        return FirewallSet.Span(low, low | size)
    }
}

extension FirewallSet {
    /// What a rule allows: peer addresses, one protocol and a range of its "service" (a port, or
    /// for ICMP `type << 8 | code`, the encoding flows use).
    public struct Box: Hashable, Sendable {
        public var addresses: Span
        public var transport: UInt8
        public var services: ClosedRange<UInt16>
        public init(addresses: Span, transport: UInt8, services: ClosedRange<UInt16>) {
            self.addresses = addresses
            self.transport = transport
            self.services = services
        }
    }

    /// The same coverage as `boxes`, as boxes that do not overlap, sorted.
    ///
    /// Per protocol: the service axis is cut at every range boundary, and over each piece the
    /// address intervals of every range covering it are merged (adjacent ones too). Pieces in a
    /// row with the same addresses are joined again. Deterministic, so a rendering compares equal
    /// to itself across runs.
    public static func disjoint(_ boxes: [Box]) -> [Box] {
        var result: [Box] = []
        let byTransport = Dictionary(grouping: boxes, by: \.transport)
        for transport in byTransport.keys.sorted() {
            // Address intervals per distinct service range, each list merged once.
            var perRange: [ClosedRange<UInt16>: [Span]] = [:]
            for box in byTransport[transport]! { perRange[box.services, default: []].append(box.addresses) }
            let ranges = perRange.keys.sorted { ($0.lowerBound, $0.upperBound) < ($1.lowerBound, $1.upperBound) }
            let merged = ranges.map { merge(perRange[$0]!) }

            var cuts = Set<Int>()
            for range in ranges {
                cuts.insert(Int(range.lowerBound))
                cuts.insert(Int(range.upperBound) + 1)
            }
            let points = cuts.sorted()
            var pieces: [(services: ClosedRange<Int>, addresses: [Span])] = []
            var next = 0
            var active: [Int] = []
            for (start, end) in zip(points, points.dropFirst()) {
                while next < ranges.count && Int(ranges[next].lowerBound) <= start {
                    active.append(next)
                    next += 1
                }
                active.removeAll { Int(ranges[$0].upperBound) < start }
                guard !active.isEmpty else { continue }
                let addresses = active.count == 1 ? merged[active[0]] : merge(active.flatMap { merged[$0] })
                if let last = pieces.last, last.services.upperBound == start - 1, last.addresses == addresses {
                    pieces[pieces.count - 1].services = last.services.lowerBound...(end - 1)
                } else {
                    pieces.append((start...(end - 1), addresses))
                }
            }
            for piece in pieces {
                let services = UInt16(piece.services.lowerBound)...UInt16(piece.services.upperBound)
                result += piece.addresses.map { Box(addresses: $0, transport: transport, services: services) }
            }
        }
        return result
    }

    /// Union of intervals, sorted; touching intervals become one.
    static func merge(_ spans: [Span]) -> [Span] {
        let sorted = spans.sorted { ($0.low, $0.high) < ($1.low, $1.high) }
        var result: [Span] = []
        for span in sorted {
            if let last = result.last, last.high == UInt128.max || span.low <= last.high + 1 {
                result[result.count - 1].high = max(last.high, span.high)
            } else {
                result.append(span)
            }
        }
        return result
    }

    /// Port ranges up to this many ports are spelled out as single ports for the hash sets.
    public static let exactPortLimit = 16

    /// Splits port boxes into exact elements, by prefix length, and the boxes left for an
    /// interval set: ranges of more than `exactPortLimit` ports, and "anywhere" (length 0).
    public static func exactElements(_ boxes: [Box], family: AddressFamily) -> (byLength: [Int: [Element]], rest: [Box]) {
        var byLength: [Int: [Element]] = [:]
        var rest: [Box] = []
        for box in disjoint(boxes) {
            let prefixes = Self.prefixes(box.addresses, width: family.bitWidth)
            guard box.services.count <= exactPortLimit, !prefixes.contains(where: { $0.length == 0 }) else {
                rest.append(box)
                continue
            }
            for prefix in prefixes {
                for port in box.services {
                    byLength[prefix.length, default: []].append(Element([Span(prefix.address), Span(UInt128(box.transport)), Span(UInt128(port))]))
                }
            }
        }
        return (byLength, rest)
    }

    /// The fewest prefixes covering exactly an address interval.
    public static func prefixes(_ span: Span, width: Int) -> [(address: UInt128, length: Int)] {
        func end(_ low: UInt128, _ size: Int) -> UInt128 { size >= 128 ? UInt128.max : low | ((UInt128(1) << size) - 1) }
        var result: [(UInt128, Int)] = []
        var low = span.low
        while true {
            // The largest aligned block starting at `low` that stays inside the interval.
            var size = low == 0 ? width : min(low.trailingZeroBitCount, width)
            while size > 0 && end(low, size) > span.high { size -= 1 }
            result.append((low, width - size))
            let last = end(low, size)
            if last >= span.high { break }
            low = last + 1
        }
        return result
    }

    /// Elements of a `address . inet_proto . inet_service` set.
    public static func portElements(_ boxes: [Box]) -> [Element] {
        disjoint(boxes).map { box in
            Element([box.addresses, Span(UInt128(box.transport)),
                     Span(UInt128(box.services.lowerBound), UInt128(box.services.upperBound))])
        }
    }

    /// Elements of a `address . icmp type . icmp code` set. A service range that runs across
    /// types is cut where a (type range × code range) rectangle cannot express it.
    public static func icmpElements(_ boxes: [Box]) -> [Element] {
        var elements: [Element] = []
        for box in disjoint(boxes) {
            var low = UInt32(box.services.lowerBound)
            let high = UInt32(box.services.upperBound)
            while low <= high {
                let type = low >> 8, code = low & 0xFF
                if code == 0 && high >= low | 0xFF {
                    // Whole types from here: as many as the range holds completely.
                    let lastType = (high & 0xFF) == 0xFF ? high >> 8 : (high >> 8) - 1
                    elements.append(Element([box.addresses, Span(UInt128(type), UInt128(lastType)), Span(0, 255)]))
                    low = (lastType + 1) << 8
                } else {
                    let lastCode = min(high, type << 8 | 0xFF) & 0xFF
                    elements.append(Element([box.addresses, Span(UInt128(type)), Span(UInt128(code), UInt128(lastCode))]))
                    low = type << 8 | lastCode + 1
                }
            }
        }
        return elements
    }
}
