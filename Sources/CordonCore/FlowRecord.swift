/// One flow aggregate as the CLI shows it (`cordon flows --json`): the contract other tools read.
public struct FlowRecord: Codable, Sendable, Equatable {
    public var direction: Direction
    public var `protocol`: String
    public var family: AddressFamily
    public var localAddress: String
    public var localPort: UInt16?
    public var remoteAddress: String
    public var remotePort: UInt16?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?
    public var connections: UInt64
    public var packets: UInt64
    public var bytes: UInt64
    public var firstSeen: String
    public var lastSeen: String
    /// "allowed", or "rejected" for what enforcement refused (red flows).
    public var verdict: FlowVerdict
    /// The names whose DNS answer gave this remote address to a connection of the flow, the most
    /// recent first; empty when no lookup was seen (or the remote is a rolled-up prefix).
    public var remoteNames: [String] = []

    enum CodingKeys: String, CodingKey {
        case direction, `protocol`, family
        case localAddress = "local_address", localPort = "local_port"
        case remoteAddress = "remote_address", remotePort = "remote_port"
        case icmpType = "icmp_type", icmpCode = "icmp_code"
        case connections, packets, bytes
        case firstSeen = "first_seen", lastSeen = "last_seen", verdict
        case remoteNames = "remote_names"
    }

    public init(direction: Direction, protocol: String, family: AddressFamily, localAddress: String, localPort: UInt16?, remoteAddress: String,
                remotePort: UInt16?, icmpType: UInt8?, icmpCode: UInt8?, connections: UInt64, packets: UInt64, bytes: UInt64, firstSeen: String,
                lastSeen: String, verdict: FlowVerdict, remoteNames: [String]) {
        self.direction = direction
        self.protocol = `protocol`
        self.family = family
        self.localAddress = localAddress
        self.localPort = localPort
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.icmpType = icmpType
        self.icmpCode = icmpCode
        self.connections = connections
        self.packets = packets
        self.bytes = bytes
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.verdict = verdict
        self.remoteNames = remoteNames
    }

    public init(key: FlowKey, stats: FlowStats, remoteNames: [String] = []) {
        self.remoteNames = remoteNames
        direction = key.direction
        self.protocol = IPProtocolNumber.name(key.transport)
        family = key.family
        localAddress = key.local.description
        localPort = key.localPort
        remoteAddress = key.remote.description
        remotePort = key.remotePort
        icmpType = key.icmpType
        icmpCode = key.icmpCode
        connections = stats.connections
        packets = stats.packets
        bytes = stats.bytes
        firstSeen = TimeText.rfc3339(stats.firstSeen)
        lastSeen = TimeText.rfc3339(stats.lastSeen)
        verdict = key.verdict
    }

    /// Nulls are written out, not omitted: a reader can rely on every field being present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(direction, forKey: .direction)
        try c.encode(self.protocol, forKey: .protocol)
        try c.encode(family, forKey: .family)
        try c.encode(localAddress, forKey: .localAddress)
        try c.encode(localPort, forKey: .localPort)
        try c.encode(remoteAddress, forKey: .remoteAddress)
        try c.encode(remotePort, forKey: .remotePort)
        try c.encode(icmpType, forKey: .icmpType)
        try c.encode(icmpCode, forKey: .icmpCode)
        try c.encode(connections, forKey: .connections)
        try c.encode(packets, forKey: .packets)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(firstSeen, forKey: .firstSeen)
        try c.encode(lastSeen, forKey: .lastSeen)
        try c.encode(verdict, forKey: .verdict)
        try c.encode(remoteNames, forKey: .remoteNames)
    }

    /// `remote_names` may be missing: agents before names did not send it.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        direction = try c.decode(Direction.self, forKey: .direction)
        self.protocol = try c.decode(String.self, forKey: .protocol)
        family = try c.decode(AddressFamily.self, forKey: .family)
        localAddress = try c.decode(String.self, forKey: .localAddress)
        localPort = try c.decodeIfPresent(UInt16.self, forKey: .localPort)
        remoteAddress = try c.decode(String.self, forKey: .remoteAddress)
        remotePort = try c.decodeIfPresent(UInt16.self, forKey: .remotePort)
        icmpType = try c.decodeIfPresent(UInt8.self, forKey: .icmpType)
        icmpCode = try c.decodeIfPresent(UInt8.self, forKey: .icmpCode)
        connections = try c.decode(UInt64.self, forKey: .connections)
        packets = try c.decode(UInt64.self, forKey: .packets)
        bytes = try c.decode(UInt64.self, forKey: .bytes)
        firstSeen = try c.decode(String.self, forKey: .firstSeen)
        lastSeen = try c.decode(String.self, forKey: .lastSeen)
        verdict = try c.decode(FlowVerdict.self, forKey: .verdict)
        // Absent is an older agent; present, it is a list (null is not).
        remoteNames = c.contains(.remoteNames) ? try c.decode([String].self, forKey: .remoteNames) : []
    }
}

/// The filters of `cordon flows`.
public struct FlowFilter: Sendable, Equatable {
    public var direction: Direction?
    public var transport: UInt8?
    /// Matches the local service port of inbound flows and the remote port of the others.
    public var port: UInt16?
    /// Only flows seen at or after this Unix time.
    public var seenSince: Int64?
    public var verdict: FlowVerdict?

    public init(direction: Direction? = nil, transport: UInt8? = nil, port: UInt16? = nil, seenSince: Int64? = nil,
                verdict: FlowVerdict? = nil) {
        self.direction = direction
        self.transport = transport
        self.port = port
        self.seenSince = seenSince
        self.verdict = verdict
    }
}

extension FlowRecord {
    /// The record as one compact JSON object with sorted keys, written directly: `flows --json`
    /// and `review --json` print up to millions of these, and a generic encoder spent ten times
    /// longer on them than everything else. `extra` adds members (already JSON) in sorted order.
    public func json(extra: [(key: String, json: String)] = []) -> String {
        func string(_ value: String) -> String { JSONText.quoted(value) }
        func number<T: BinaryInteger>(_ value: T?) -> String { value.map { String($0) } ?? "null" }
        var members: [(String, String)] = [
            ("bytes", String(bytes)), ("connections", String(connections)), ("direction", string(direction.rawValue)),
            ("family", string(family.rawValue)), ("first_seen", string(firstSeen)), ("icmp_code", number(icmpCode)),
            ("icmp_type", number(icmpType)), ("last_seen", string(lastSeen)), ("local_address", string(localAddress)),
            ("local_port", number(localPort)), ("packets", String(packets)), ("protocol", string(self.protocol)),
            ("remote_address", string(remoteAddress)), ("remote_names", "[" + remoteNames.map(string).joined(separator: ",") + "]"),
            ("remote_port", number(remotePort)),
            ("verdict", string(verdict.rawValue)),
        ]
        members += extra.map { ($0.key, $0.json) }
        members.sort { $0.0 < $1.0 }
        return "{" + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }
}

/// JSON string literals, escaped as RFC 8259 requires.
public enum JSONText {
    public static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
