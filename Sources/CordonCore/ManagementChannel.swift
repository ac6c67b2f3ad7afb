/// The traffic that keeps a host manageable whatever its ruleset says: the collectors the agent
/// reports to, DNS to the configured resolvers, and the site's extra whitelist. Enforcement
/// always allows it, isolation allows nothing else, and a release checks it before trusting the
/// host again.
public struct ManagementChannel: Hashable, Sendable {
    /// One allowed peer: a protocol, addresses, and a port (nil: every port, or every ICMP type).
    public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
        public var transport: UInt8
        public var addresses: IPPrefix
        public var port: UInt16?

        public init(transport: UInt8, addresses: IPPrefix, port: UInt16?) {
            self.transport = transport
            self.addresses = addresses
            self.port = port
        }

        /// `tcp/192.0.2.20:9000`, `udp/[2001:db8::/64]:53`, `icmp/198.51.100.0/24`.
        public var description: String {
            let name = IPProtocolNumber.name(transport)
            guard let port else { return "\(name)/\(addresses)" }
            return addresses.family == .ipv6 ? "\(name)/[\(addresses)]:\(port)" : "\(name)/\(addresses):\(port)"
        }

        /// The collector form, `192.0.2.20:9000` or `[2001:db8::20]:9000`.
        public var hostPort: String {
            addresses.family == .ipv6 ? "[\(addresses.address)]:\(port ?? 0)" : "\(addresses.address):\(port ?? 0)"
        }

        /// The services this endpoint allows, in the encoding flows and sets use.
        var services: ClosedRange<UInt16> {
            if let port { return port...port }
            return 0...UInt16.max
        }
    }

    /// A value of `--collector`, `--resolver` or `--extra-allow` (or their config keys) that
    /// does not parse.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var option: String
        public var value: String
        public var message: String
        public var description: String { "\(option) '\(value)': \(message)" }
        public init(option: String, value: String, message: String) {
            self.option = option
            self.value = value
            self.message = message
        }
    }

    /// TCP endpoints the agent reports to; enforce and release check them with a TCP connect.
    public var collectors: [Endpoint]
    /// Collectors given by name: the agent resolves them (and re-resolves them while it runs)
    /// and puts their addresses among `collectors` in the channel it installs.
    public var collectorNames: [NamedCollector] = []

    /// A collector given as `NAME:PORT`.
    public struct NamedCollector: Hashable, Sendable, CustomStringConvertible {
        public var name: String
        public var port: UInt16
        public init(name: String, port: UInt16) {
            self.name = name
            self.port = port
        }
        public var description: String { "\(name):\(port)" }
    }

    /// What a `--collector` value names.
    public enum CollectorTarget: Hashable, Sendable {
        case address(Endpoint)
        case name(NamedCollector)
    }
    /// DNS servers: udp/53 and tcp/53 to each.
    public var resolvers: [IPAddress]
    /// Allowed in both directions: to the address and port, and from the address to the local port.
    public var extra: [Endpoint]

    public init(collectors: [Endpoint] = [], resolvers: [IPAddress] = [], extra: [Endpoint] = []) {
        self.collectors = collectors
        self.resolvers = resolvers
        self.extra = extra
    }

    public var isEmpty: Bool { collectors.isEmpty && collectorNames.isEmpty && resolvers.isEmpty && extra.isEmpty }

    /// One line for the decision log and `cordon status`.
    public var summary: String {
        var parts = collectors.map { "collector \($0.hostPort)" }
        parts += collectorNames.map { "collector \($0) (by name)" }
        parts += resolvers.map { "resolver \($0)" }
        parts += extra.map { "extra \($0)" }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }

    /// One hole of the channel, as data: what the decision log records (the source documents'
    /// `management_whitelist`) and what the server will compare.
    public struct WhitelistEntry: Codable, Sendable, Hashable {
        public var `protocol`: String
        /// An address or a CIDR.
        public var address: String
        /// nil: every port (or ICMP).
        public var port: UInt16?
        public init(protocol name: String, address: String, port: UInt16?) {
            self.protocol = name
            self.address = address
            self.port = port
        }
    }

    /// Collectors (tcp), resolvers (udp and tcp 53), then the extra entries, in that order.
    public var whitelist: [WhitelistEntry] {
        var entries = collectors.map { WhitelistEntry(protocol: "tcp", address: $0.addresses.description, port: $0.port) }
        for resolver in resolvers {
            entries.append(WhitelistEntry(protocol: "udp", address: resolver.description, port: 53))
            entries.append(WhitelistEntry(protocol: "tcp", address: resolver.description, port: 53))
        }
        entries += extra.map { WhitelistEntry(protocol: IPProtocolNumber.name($0.transport), address: $0.addresses.description, port: $0.port) }
        return entries
    }

    // MARK: Parsing

    /// `ADDRESS:PORT` or `[IPV6]:PORT`. Addresses only: resolving a name needs the DNS that the
    /// firewall being installed may block, and a name that resolves differently later would
    /// silently move the hole.
    /// `ADDRESS:PORT`, `[IPV6]:PORT` or `NAME:PORT` (a fully qualified name).
    public static func collectorTarget(_ text: String) throws(ParseError) -> CollectorTarget {
        guard let (host, port) = splitPort(text), let port, IPAddress(host) == nil, !host.hasPrefix("[") else {
            return .address(try collector(text))
        }
        guard port > 0 else { throw ParseError(option: "--collector", value: text, message: "port must be 1-65535") }
        do {
            guard case .exact(let name) = try NamePattern(parsing: host) else {
                throw ParseError(option: "--collector", value: text, message: "a collector is one name, not a wildcard")
            }
            return .name(NamedCollector(name: name, port: port))
        } catch let error as NamePattern.Invalid {
            throw ParseError(option: "--collector", value: text, message: "expected ADDRESS:PORT or NAME:PORT; \(error.description)")
        } catch let error as ParseError {
            throw error
        } catch {
            throw ParseError(option: "--collector", value: text, message: "\(error)")
        }
    }

    /// Collectors by address and by name, in the order given.
    public static func split(_ targets: [CollectorTarget]) -> ([Endpoint], [NamedCollector]) {
        var endpoints: [Endpoint] = [], names: [NamedCollector] = []
        for target in targets {
            switch target {
            case .address(let endpoint): endpoints.append(endpoint)
            case .name(let name): names.append(name)
            }
        }
        return (endpoints, names)
    }

    public static func collector(_ text: String) throws(ParseError) -> Endpoint {
        func fail(_ message: String) -> ParseError { ParseError(option: "--collector", value: text, message: message) }
        guard let (host, port) = splitPort(text), let port else { throw fail("expected ADDRESS:PORT or [IPV6]:PORT") }
        guard let address = IPAddress(host) else { throw fail("'\(host)' is not an IP address (host names are not accepted: give the address)") }
        guard !address.isIPv4Mapped else { throw fail("'\(host)' is an IPv4 address written as IPv6: write it as IPv4") }
        guard port > 0 else { throw fail("port must be 1-65535") }
        return Endpoint(transport: IPProtocolNumber.tcp, addresses: IPPrefix(address), port: port)
    }

    public static func resolver(_ text: String) throws(ParseError) -> IPAddress {
        guard let address = IPAddress(text) else {
            throw ParseError(option: "--resolver", value: text, message: "expected an IPv4 or IPv6 address")
        }
        guard !address.isIPv4Mapped else {
            throw ParseError(option: "--resolver", value: text, message: "an IPv4 address written as IPv6: write it as IPv4")
        }
        return address
    }

    /// `PROTO/ADDRESS[/LEN][:PORT]`, IPv6 with a port in brackets: `tcp/[2001:db8::/64]:443`.
    public static func extra(_ text: String) throws(ParseError) -> Endpoint {
        func fail(_ message: String) -> ParseError { ParseError(option: "--extra-allow", value: text, message: message) }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let transport = IPProtocolNumber.parse(String(parts[0])), UInt8(parts[0]) == nil,
              IPProtocolNumber.hasPorts(transport) || IPProtocolNumber.isICMP(transport)
        else { throw fail("expected PROTO/ADDRESS[:PORT] with PROTO one of tcp, udp, sctp, dccp, udplite, icmp, icmpv6") }
        guard let (host, port) = splitPort(String(parts[1])) else { throw fail("expected ADDRESS[/LEN][:PORT]; IPv6 with a port in brackets") }
        guard let addresses = IPPrefix(host) else { throw fail("'\(host)' is not an address or CIDR") }
        let written = IPAddress(String(host.split(separator: "/", maxSplits: 1)[0]))
        guard addresses.address == written else {
            throw fail("'\(host)' has host bits set; did you mean \(addresses.address)/\(addresses.length)?")
        }
        guard !addresses.address.isIPv4Mapped else { throw fail("'\(host)' is an IPv4 address written as IPv6: write it as IPv4") }
        if IPProtocolNumber.isICMP(transport) {
            guard port == nil else { throw fail("\(parts[0]) has no ports") }
            let family: AddressFamily = transport == IPProtocolNumber.icmp ? .ipv4 : .ipv6
            guard addresses.family == family else { throw fail("\(parts[0]) needs an \(family.rawValue) address") }
        }
        if let port, port == 0 { throw fail("port must be 1-65535 (leave it out for every port)") }
        return Endpoint(transport: transport, addresses: addresses, port: port)
    }

    /// Splits `host:port`, `[host]:port`, `[host]` or a bare host; nil when malformed.
    private static func splitPort(_ text: String) -> (String, UInt16?)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":"), let port = StrictDecimal.parse(rest.dropFirst(), as: UInt16.self) else { return nil }
            return (host, port)
        }
        let colons = text.filter { $0 == ":" }.count
        if colons == 1 {
            let pieces = text.split(separator: ":", omittingEmptySubsequences: false)
            guard let port = StrictDecimal.parse(pieces[1], as: UInt16.self) else { return nil }
            return (String(pieces[0]), port)
        }
        return (text, nil)
    }

    // MARK: What the firewall allows

    /// Peers this host may open connections to, as set boxes of one family.
    public func outgoingBoxes(_ family: AddressFamily) -> [FirewallSet.Box] {
        var boxes: [FirewallSet.Box] = []
        for endpoint in collectors + extra where endpoint.addresses.family == family {
            boxes.append(FirewallSet.Box(addresses: endpoint.addresses.span, transport: endpoint.transport, services: endpoint.services))
        }
        for resolver in resolvers where resolver.family == family {
            for transport in [IPProtocolNumber.udp, IPProtocolNumber.tcp] {
                boxes.append(FirewallSet.Box(addresses: IPPrefix(resolver).span, transport: transport, services: 53...53))
            }
        }
        return boxes
    }

    /// Peers that may open connections to this host: the extra whitelist only.
    public func incomingBoxes(_ family: AddressFamily) -> [FirewallSet.Box] {
        extra.filter { $0.addresses.family == family }.map {
            FirewallSet.Box(addresses: $0.addresses.span, transport: $0.transport, services: $0.services)
        }
    }
}

extension ManagementChannel: Codable {
    /// Stored in the text forms the options take, so the database reads like the command line.
    private enum CodingKeys: String, CodingKey { case collectors, resolvers, extra }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            collectors = try container.decode([String].self, forKey: .collectors).map { text throws(ParseError) in try Self.collector(text) }
            resolvers = try container.decode([String].self, forKey: .resolvers).map { text throws(ParseError) in try Self.resolver(text) }
            extra = try container.decode([String].self, forKey: .extra).map { text throws(ParseError) in try Self.extra(text) }
        } catch let error as ParseError {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: [], debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(collectors.map(\.hostPort), forKey: .collectors)
        try container.encode(resolvers.map(\.description), forKey: .resolvers)
        try container.encode(extra.map(\.description), forKey: .extra)
    }
}
