/// An allow-list for one host (or a fleet of hosts, by selector): named external networks and the
/// rules that let traffic to or from them through. Everything a ruleset does not allow is rejected
/// once the host enforces.
public struct Ruleset: Hashable, Sendable {
    public var name: String?
    public var description: String?
    public var appliesTo: HostSelector
    public var networks: [ExternalNetwork]
    public var incoming: [Rule]
    public var outgoing: [Rule]

    public init(name: String? = nil, description: String? = nil, appliesTo: HostSelector = HostSelector(),
                networks: [ExternalNetwork], incoming: [Rule] = [], outgoing: [Rule] = []) {
        self.name = name
        self.description = description
        self.appliesTo = appliesTo
        self.networks = networks
        self.incoming = incoming
        self.outgoing = outgoing
    }

    public func network(named name: String) -> ExternalNetwork? { networks.first { $0.name == name } }

    /// The networks with name entries that a rule uses: what enforcing them needs DNS answers for.
    public var namedNetworks: [ExternalNetwork] {
        let used = Set((incoming + outgoing).map(\.network))
        return networks.filter { !$0.names.isEmpty && used.contains($0.name) }
    }
}

/// Which hosts a ruleset is for, in one of the two forms a file can give (`appliesTo`): a selector
/// expression (`role == "web" && env == "prod"`), or the lists rulesets had before selectors. The
/// form is kept, not converted, so a file written back reads as the operator wrote it; `selector`
/// is the meaning of either form.
///
/// The lists: empty means any host; with both, a host matches one agent id *or* carries every
/// listed tag (`agent("web-01") || has(web) && has(prod)`).
public struct HostSelector: Hashable, Sendable {
    public var agents: [String]
    public var tags: [String]
    /// Set when `appliesTo` is an expression; `agents` and `tags` are then empty.
    public var expression: Selector?

    public init(agents: [String] = [], tags: [String] = []) {
        self.agents = agents
        self.tags = tags
        self.expression = nil
    }

    public init(_ expression: Selector) {
        self.agents = []
        self.tags = []
        self.expression = expression
    }

    /// No `appliesTo` at all: every host. An expression is never empty (`all()` says it).
    public var isEmpty: Bool { expression == nil && agents.isEmpty && tags.isEmpty }

    /// What either form means, as one selector: the expression, or the lists translated (a bare
    /// tag name is a key, present with any value). Without `appliesTo`, `all()`.
    public var selector: Selector {
        if let expression { return expression }
        var parts: [Selector] = []
        if !agents.isEmpty { parts.append(.agent(Array(Set(agents)).sorted())) }
        if !tags.isEmpty { parts.append(tags.count == 1 ? .has(tags[0]) : .and(tags.map(Selector.has))) }
        switch parts.count {
        case 0: return .all
        case 1: return parts[0]
        default: return .or(parts)
        }
    }

    public func matches(agent: String, tags hostTags: [String: String]) -> Bool {
        selector.matches(hostTags, agent: agent)
    }

    /// For callers that know a host's tags as bare names: each is a key without a value, so
    /// `has(name)` sees it and a comparison with a value never matches it.
    public func matches(agent: String, tags hostTags: Set<String>) -> Bool {
        matches(agent: agent, tags: Dictionary(uniqueKeysWithValues: hostTags.map { ($0, "") }))
    }
}

/// A named set of addresses together with the services reached on them.
public struct ExternalNetwork: Hashable, Sendable {
    /// Where the proposer offers a standard network; no effect on enforcement.
    public enum Usage: String, Hashable, Sendable { case incoming, outgoing, both }

    public var name: String
    public var comment: String?
    public var usage: Usage?
    /// The entries that are addresses and CIDRs.
    public var entries: [IPPrefix]
    /// The entries that are names: the addresses their DNS answers gave (see Docs/rulesets.md).
    public var names: [NamePattern]
    public var services: [Service]

    public init(name: String, comment: String? = nil, usage: Usage? = nil, entries: [IPPrefix], names: [NamePattern] = [],
                services: [Service]) {
        self.name = name
        self.comment = comment
        self.usage = usage
        self.entries = entries
        self.names = names
        self.services = services
    }

    /// True when a flow's remote address and service belong to this network.
    public func contains(remote: IPPrefix, transport: UInt8, service: UInt16) -> Bool {
        contains(remote: remote, names: [], transport: transport, service: service)
    }

    /// True when a flow's service belongs to this network and its remote does: by address, or
    /// by one of the names its connections were looked up by (`remote_names`).
    public func contains(remote: IPPrefix, names remoteNames: [String], transport: UInt8, service: UInt16) -> Bool {
        services.contains { $0.matches(transport: transport, service: service) }
            && (entries.contains { $0.covers(remote) } || remoteNames.contains { name in names.contains { $0.matches(name) } })
    }
}

/// A network prepared for matching many flows: single-address entries in a hash set, the few
/// wider prefixes in a list. A proposal narrows a network to every server seen, so entries can
/// number in the thousands; a linear scan per flow made `review` quadratic.
public struct NetworkMatcher: Sendable {
    public let network: ExternalNetwork
    private let single: Set<IPAddress>
    private let wider: [IPPrefix]

    public init(_ network: ExternalNetwork) {
        self.network = network
        single = Set(network.entries.filter(\.isSingleAddress).map(\.address))
        wider = network.entries.filter { !$0.isSingleAddress }
    }

    /// Same answer as `ExternalNetwork.contains`.
    public func contains(remote: IPPrefix, names remoteNames: [String] = [], transport: UInt8, service: UInt16) -> Bool {
        guard network.services.contains(where: { $0.matches(transport: transport, service: service) }) else { return false }
        if remote.isSingleAddress && single.contains(remote.address) { return true }
        if wider.contains(where: { $0.covers(remote) }) { return true }
        return remoteNames.contains { name in network.names.contains { $0.matches(name) } }
    }
}

/// A protocol with a port range, or an ICMP/ICMPv6 type (and optionally code).
public enum Service: Hashable, Sendable, CustomStringConvertible {
    /// tcp, udp, sctp, dccp or udplite, with an inclusive port range.
    case ports(transport: UInt8, range: ClosedRange<UInt16>)
    /// icmp or icmpv6; nil type or code means any.
    case icmp(transport: UInt8, type: UInt8?, code: UInt8?)

    public var transport: UInt8 {
        switch self {
        case .ports(let transport, _), .icmp(let transport, _, _): return transport
        }
    }

    /// `service` as flows hold it: the port, or `type << 8 | code` for ICMP.
    public func matches(transport: UInt8, service: UInt16) -> Bool {
        guard transport == self.transport else { return false }
        switch self {
        case .ports(_, let range):
            return range.contains(service)
        case .icmp(_, let type, let code):
            return (type.map { UInt16($0) == service >> 8 } ?? true) && (code.map { UInt16($0) == service & 0xFF } ?? true)
        }
    }

    /// The text form used in ruleset files: `tcp/22`, `udp/67-68`, `icmp/8/0`, `icmpv6/128`, `icmp`.
    public var description: String {
        switch self {
        case .ports(let transport, let range):
            let name = IPProtocolNumber.name(transport)
            return range.lowerBound == range.upperBound ? "\(name)/\(range.lowerBound)" : "\(name)/\(range.lowerBound)-\(range.upperBound)"
        case .icmp(let transport, let type, let code):
            var text = IPProtocolNumber.name(transport)
            if let type { text += "/\(type)" }
            if let code { text += "/\(code)" }
            return text
        }
    }

    /// Parses the text form; returns nil with no explanation (the ruleset parser explains).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let transport = IPProtocolNumber.parse(parts[0]), UInt8(parts[0]) == nil else { return nil }
        if IPProtocolNumber.isICMP(transport) {
            guard parts.count <= 3 else { return nil }
            var type: UInt8?, code: UInt8?
            if parts.count >= 2 { guard let value = StrictDecimal.parse(parts[1], as: UInt8.self) else { return nil }; type = value }
            if parts.count == 3 { guard let value = StrictDecimal.parse(parts[2], as: UInt8.self) else { return nil }; code = value }
            self = .icmp(transport: transport, type: type, code: code)
            return
        }
        guard IPProtocolNumber.hasPorts(transport), parts.count == 2 else { return nil }
        let bounds = parts[1].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count <= 2, let low = StrictDecimal.parse(bounds[0], as: UInt16.self) else { return nil }
        let high = bounds.count == 2 ? StrictDecimal.parse(bounds[1], as: UInt16.self) : low
        guard let high, low <= high else { return nil }
        self = .ports(transport: transport, range: low...high)
    }
}

/// One allow rule: traffic from (incoming) or to (outgoing) a network.
public struct Rule: Hashable, Sendable {
    public var network: String
    public var comment: String?

    public init(network: String, comment: String? = nil) {
        self.network = network
        self.comment = comment
    }
}
