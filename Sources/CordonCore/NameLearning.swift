extension CordonTables {
    /// Log prefix of the DNS responses copied to the agent.
    public static let nameLogPrefix = "cordon-dns"

    /// Prefix of the sets that hold the addresses of name entries (`names_1_v4`); the confirmation
    /// fallback's copies carry `prev_` before it.
    public static let nameSetPrefix = "names_"

    /// A set of addresses filled from DNS answers (not the services set beside it).
    public static func isNameSet(_ name: String) -> Bool {
        (name.hasPrefix(nameSetPrefix) || name.hasPrefix(previousPrefix + nameSetPrefix)) && (name.hasSuffix("_v4") || name.hasSuffix("_v6"))
    }

    /// Where the agent learns names: the responses of these resolvers, copied to this NFLOG
    /// group, or (a ruleset with name entries) held in the nfnetlink queue of the same number
    /// until their addresses are in the name sets.
    public struct NameCapture: Hashable, Sendable {
        public var resolvers: [IPAddress]
        public var group: UInt16
        /// Per network with name entries: the addresses its names were answered with that are
        /// still valid, and the seconds each has left. A table made now starts with them.
        public var elements: [String: [NameElement]]

        public init(resolvers: [IPAddress], group: UInt16, elements: [String: [NameElement]] = [:]) {
            self.resolvers = resolvers
            self.group = group
            self.elements = elements
        }

        /// An answer's address stays in a name set at least this long, whatever its TTL (0 and 1
        /// are common): a program connects a moment after its lookup.
        public static let ttlFloor: Int64 = 60
        /// And this long after its TTL (and the floor) ran out: programs cache answers longer than
        /// their TTL. Established connections outlive the element anyway.
        public static let grace: Int64 = 120

        /// Seconds the element of an answer seen at `answered` with `expires` has left at `now`.
        public static func lifetime(answered: Int64, expires: Int64, now: Int64) -> Int64 {
            max(expires, answered + ttlFloor) + grace - now
        }

        /// The group next to the rejected-packet group: one setting (`log_group`) places both.
        public static func group(after logGroup: UInt16) -> UInt16 { logGroup == .max ? logGroup - 1 : logGroup + 1 }
    }

    /// A set of the resolvers' DNS ports and, first in the input chain, a rule that copies what
    /// they send back on connections this host opened (conntrack's established: a reply) to the
    /// agent. It has no verdict, so it decides nothing: the packet goes on to the rules below,
    /// and is not held. An answer from any other address, or one no query of this host asked
    /// for (conntrack's new), is never copied: a forged answer teaches nothing.
    /// - Parameter holding: queue the answers (a ruleset with name entries) instead of copying them.
    static func nameCapture(_ capture: NameCapture?, holding: Bool = false) -> (sets: [FirewallSet], rules: [FirewallRule]) {
        guard let capture, !capture.resolvers.isEmpty else { return ([], []) }
        var sets: [FirewallSet] = [], rules: [FirewallRule] = []
        for family in AddressFamily.allCases {
            let resolvers = capture.resolvers.filter { $0.family == family }
            guard !resolvers.isEmpty else { continue }
            let fields: [FirewallSet.Field] = [family == .ipv4 ? .ipv4Address : .ipv6Address, .transport, .port]
            let elements = Set(resolvers).sorted().flatMap { resolver in
                [IPProtocolNumber.udp, IPProtocolNumber.tcp].map {
                    FirewallSet.Element([FirewallSet.Span(resolver.value), FirewallSet.Span(UInt128($0)), FirewallSet.Span(53)])
                }
            }
            let set = FirewallSet(name: "dns_\(family == .ipv4 ? "v4" : "v6")", fields: fields, elements: elements,
                                  comment: "resolvers whose answers name the flows", exact: true)
            sets.append(set)
            rules.append(FirewallRule(matches: [.conntrackState([.established]), .family(family),
                                                .inSet(name: set.name, key: .init(peer: .incoming, fields: fields, sourcePort: true))],
                                      log: holding ? nil : .init(prefix: nameLogPrefix, group: capture.group),
                                      verdict: holding ? .queue(capture.group) : nil))
        }
        return (sets, rules)
    }
}

/// One address of a name set, with the seconds it has left.
public struct NameElement: Hashable, Sendable {
    public var address: IPAddress
    public var timeout: Int64
    public init(address: IPAddress, timeout: Int64) {
        self.address = address
        self.timeout = timeout
    }
}

extension CordonTables {
    /// The name sets of one network with name entries: its addresses per family (`dynamic`,
    /// filled from DNS answers) and its port services, and the rules that allow them.
    /// The networks that get name sets, with the number in their sets' names (`names_N_v4`):
    /// those with name entries, a rule, and a port service.
    public static func nameSetNetworks(_ ruleset: Ruleset) -> [(number: Int, network: ExternalNetwork)] {
        ruleset.namedNetworks.enumerated().compactMap { index, network in
            network.services.contains { if case .ports = $0 { true } else { false } } ? (index + 1, network) : nil
        }
    }

    /// The name set of a network's number for an address's family.
    public static func nameSetName(_ number: Int, _ family: AddressFamily) -> String {
        "\(nameSetPrefix)\(number)_\(family == .ipv4 ? "v4" : "v6")"
    }

    static func nameSets(_ ruleset: Ruleset, capture: NameCapture?) -> (sets: [FirewallSet], input: [FirewallRule], output: [FirewallRule]) {
        var sets: [FirewallSet] = [], input: [FirewallRule] = [], output: [FirewallRule] = []
        for (number, network) in nameSetNetworks(ruleset) {
            let prefix = "\(nameSetPrefix)\(number)"
            var ports: [FirewallSet.Span] = []
            var services: [FirewallSet.Element] = []
            for transport in Set(network.services.map(\.transport)).sorted() {
                ports = network.services.compactMap {
                    guard case .ports(let t, let range) = $0, t == transport else { return nil }
                    return FirewallSet.Span(UInt128(range.lowerBound), UInt128(range.upperBound))
                }
                for range in FirewallSet.merge(ports) { services.append(.init([FirewallSet.Span(UInt128(transport)), range])) }
            }
            let patterns = network.names.map(\.description).joined(separator: ", ")
            let svc = FirewallSet(name: prefix + "_svc", fields: [.transport, .port], elements: services,
                                  comment: "network \(network.name) by name (\(patterns)): its services")
            sets.append(svc)
            let known = capture?.elements[network.name] ?? []
            for family in AddressFamily.allCases {
                let field: FirewallSet.Field = family == .ipv4 ? .ipv4Address : .ipv6Address
                let elements = known.filter { $0.address.family == family && $0.timeout > 0 }
                    .map { FirewallSet.Element([FirewallSet.Span($0.address.value)], timeout: $0.timeout) }
                let set = FirewallSet(name: nameSetName(number, family), fields: [field], elements: elements,
                                      comment: "network \(network.name) by name: addresses of DNS answers for \(patterns)", dynamic: true)
                sets.append(set)
                for (rules, side) in [(ruleset.incoming, FirewallRule.Side.incoming), (ruleset.outgoing, .outgoing)]
                    where rules.contains(where: { $0.network == network.name }) {
                    let rule = FirewallRule(matches: [.family(family), .inSet(name: set.name, key: .init(peer: side, fields: [field])),
                                                      .inSet(name: svc.name, key: .init(peer: side, fields: svc.fields))],
                                            verdict: .accept)
                    if side == .incoming { input.append(rule) } else { output.append(rule) }
                }
            }
        }
        return (sets, input, output)
    }
}
