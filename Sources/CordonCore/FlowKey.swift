/// Who opened a connection, as seen from the protected host.
public enum Direction: String, Sendable, Codable, CaseIterable {
    /// A peer opened it to one of this host's addresses.
    case inbound
    /// This host opened it.
    case outbound
    /// Neither end is this host: routed through it.
    case forward
}

/// What the host's firewall did with a flow: everything recorded from conntrack was let through
/// (in discovery, or by the enforced ruleset); what enforcement refused is recorded from the
/// packets it logs. Part of the key: a flow refused today is not the same record as the one
/// allowed last week.
public enum FlowVerdict: String, Sendable, Codable, CaseIterable {
    case allowed, rejected
}

/// IP protocol numbers Cordon names; any other protocol is reported by number.
public enum IPProtocolNumber {
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let dccp: UInt8 = 33
    public static let icmpv6: UInt8 = 58
    public static let sctp: UInt8 = 132
    public static let udplite: UInt8 = 136

    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the number as text.
    public static func name(_ number: UInt8) -> String {
        switch number {
        case tcp: return "tcp"
        case udp: return "udp"
        case icmp: return "icmp"
        case icmpv6: return "icmpv6"
        case sctp: return "sctp"
        case dccp: return "dccp"
        case udplite: return "udplite"
        default: return String(number)
        }
    }

    /// Accepts a name from `name(_:)` or a number 0-255.
    public static func parse(_ text: String) -> UInt8? {
        if let number = UInt8(text) { return number }
        return byName[text] ?? byName[text.lowercased()]
    }

    /// The same from UTF-8 bytes (a stored flow row's protocol): the names compared byte by
    /// byte, no `String` made.
    public static func parse(utf8 text: UnsafeBufferPointer<UInt8>) -> UInt8? {
        if let number = StrictDecimal.parse(utf8: text, as: UInt8.self) { return number }
        for (name, number) in byNameUTF8 where name.elementsEqual(text) { return number }
        return parse(String(decoding: text, as: UTF8.self))
    }

    private static let byNameUTF8: [([UInt8], UInt8)] = byName.map { (Array($0.key.utf8), $0.value) }.sorted { $0.1 < $1.1 }

    /// Read once per uploaded flow row on the server: a table, not a scan of 256 names.
    private static let byName: [String: UInt8] = Dictionary(uniqueKeysWithValues: [tcp, udp, icmp, icmpv6, sctp, dccp, udplite].map { (name($0), $0) })

    /// Protocols whose conntrack tuple carries ports.
    public static func hasPorts(_ number: UInt8) -> Bool {
        number == tcp || number == udp || number == sctp || number == dccp || number == udplite
    }

    public static func isICMP(_ number: UInt8) -> Bool { number == icmp || number == icmpv6 }
}

/// What an allow-rule would need to know about a connection, and nothing ephemeral.
///
/// Inbound flows are keyed by the local service port, outbound and forwarded ones by the remote
/// port; the client's ephemeral port is dropped, which is what keeps a week of traffic small.
/// ICMP has no ports: its type and code take the place of the port (`service`).
public struct FlowKey: Hashable, Sendable {
    public var direction: Direction
    public var transport: UInt8
    /// This host's address (inbound, outbound) or the originator (forward).
    public var local: IPAddress
    /// The peer, or after roll-up the network that covers several peers.
    public var remote: IPPrefix
    /// The service port (see above), or `type << 8 | code` for ICMP, or 0.
    public var service: UInt16
    public var verdict: FlowVerdict

    public init(direction: Direction, transport: UInt8, local: IPAddress, remote: IPPrefix, service: UInt16,
                verdict: FlowVerdict = .allowed) {
        self.direction = direction
        self.transport = transport
        self.local = local
        self.remote = remote
        self.service = service
        self.verdict = verdict
    }

    public init(direction: Direction, transport: UInt8, local: IPAddress, remote: IPPrefix,
                port: UInt16? = nil, icmpType: UInt8? = nil, icmpCode: UInt8? = nil, verdict: FlowVerdict = .allowed) {
        let service: UInt16 = IPProtocolNumber.isICMP(transport)
            ? UInt16(icmpType ?? 0) << 8 | UInt16(icmpCode ?? 0)
            : port ?? 0
        self.init(direction: direction, transport: transport, local: local, remote: remote, service: service, verdict: verdict)
    }

    public var family: AddressFamily { local.family }

    /// The local service port of an inbound flow; nil otherwise.
    public var localPort: UInt16? {
        direction == .inbound && IPProtocolNumber.hasPorts(transport) ? service : nil
    }

    /// The server's port of an outbound or forwarded flow; nil otherwise.
    public var remotePort: UInt16? {
        direction != .inbound && IPProtocolNumber.hasPorts(transport) ? service : nil
    }

    public var icmpType: UInt8? { IPProtocolNumber.isICMP(transport) ? UInt8(service >> 8) : nil }
    public var icmpCode: UInt8? { IPProtocolNumber.isICMP(transport) ? UInt8(service & 0xFF) : nil }

    /// Five words instead of a combine per field: this runs for every event the agent reads.
    public func hash(into hasher: inout Hasher) {
        let directionBits: UInt64 = direction == .inbound ? 0 : direction == .outbound ? 1 : 2
        hasher.combine(directionBits | UInt64(transport) << 8 | UInt64(service) << 16 | UInt64(remote.length) << 32
                       | (local.family == .ipv6 ? 1 << 40 : 0) | (verdict == .rejected ? 1 << 41 : 0))
        hasher.combine(local.high)
        hasher.combine(local.low)
        hasher.combine(remote.address.high)
        hasher.combine(remote.address.low)
    }

    /// The (direction, protocol, port) bucket whose distinct remotes are capped.
    public var group: FlowGroup {
        FlowGroup(direction: direction, family: family, transport: transport, service: service, verdict: verdict)
    }

    /// The same key with the remote replaced by its covering prefix.
    public func rolledUp(to length: Int) -> FlowKey {
        var key = self
        key.remote = IPPrefix(remote.address, length: length)
        return key
    }
}

/// The unit the remote-address cap applies to: one direction, family, protocol and port, and
/// the verdict (a scan that enforcement refuses must not roll up the allowed peers of that port).
public struct FlowGroup: Hashable, Sendable {
    public var direction: Direction
    public var family: AddressFamily
    public var transport: UInt8
    public var service: UInt16
    public var verdict: FlowVerdict = .allowed
}

/// What is known of one flow aggregate.
public struct FlowStats: Hashable, Sendable {
    public var connections: UInt64
    public var packets: UInt64
    public var bytes: UInt64
    /// Unix time, seconds.
    public var firstSeen: Int64
    /// Unix time, seconds.
    public var lastSeen: Int64

    public init(connections: UInt64, packets: UInt64 = 0, bytes: UInt64 = 0, firstSeen: Int64, lastSeen: Int64) {
        self.connections = connections
        self.packets = packets
        self.bytes = bytes
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
    }

    /// Folds another aggregate of the same key (or of a key being rolled up into this one) in.
    public mutating func merge(_ other: FlowStats) {
        connections &+= other.connections
        packets &+= other.packets
        bytes &+= other.bytes
        firstSeen = min(firstSeen, other.firstSeen)
        lastSeen = max(lastSeen, other.lastSeen)
    }
}
