extension CordonTables {
    /// NFLOG group the enforcement table logs rejected packets to, unless configured otherwise.
    public static let defaultLogGroup: UInt16 = 7100
    /// Log prefixes: they tell the agent which chain (direction) rejected a packet.
    public static let inboundLogPrefix = "cordon-in"
    public static let outboundLogPrefix = "cordon-out"

    /// ICMPv6 types a host needs whatever its ruleset: router and neighbour discovery (133-136)
    /// and multicast listener reports (141-143). Without them IPv6 neighbours vanish.
    public static let neighbourDiscoveryTypes: [ClosedRange<UInt8>] = [133...136, 141...143]

    /// The set of the kernel-side confirmation switch.
    public static let armedSetName = "armed"
    /// Names of the last confirmed ruleset's sets and chains inside an unconfirmed table.
    public static let previousPrefix = "prev_"

    private static func renamingSets(_ rule: FirewallRule) -> FirewallRule {
        var renamed = rule
        renamed.matches = rule.matches.map { match in
            if case .inSet(let name, let key) = match { return .inSet(name: previousPrefix + name, key: key) }
            return match
        }
        return renamed
    }

    /// Default-reject for one host: loopback, established and related traffic, neighbour
    /// discovery, the management channel and the ruleset's allow rules pass; every other inbound
    /// packet is dropped silently, every other outbound one is refused at once (TCP reset, or ICMP
    /// administratively prohibited) so local programs fail fast instead of hanging. Both are
    /// counted and logged to `logGroup`, where the agent records them as rejected flows.
    ///
    /// Rules are few and fixed; the ruleset's size only changes the sets' elements.
    ///
    /// - Parameters:
    ///   - openAfter: while an enforcement awaits confirmation, the seconds after which the kernel
    ///     itself rolls back: the `armed` set's two elements (ipv4, ipv6) expire then, and the first
    ///     rule of the input and output chains (`meta nfproto != @armed …`) takes over. The agent
    ///     rolls back before that; this is the way back when it cannot (killed inside the window
    ///     and not restarted). Confirmation commits the table without it.
    ///   - fallback: what that rule falls back to: the last confirmed ruleset, kept whole in the
    ///     chains `prev_input` and `prev_output` (sets prefixed `prev_`); nil means discovery
    ///     (the rule accepts).
    ///   - names: the resolvers whose answers the agent learns names from (see `nameCapture`).
    public static func enforcement(ruleset: Ruleset, management: ManagementChannel,
                                   logGroup: UInt16 = defaultLogGroup, openAfter: Int64? = nil,
                                   fallback: Ruleset? = nil, names: NameCapture? = nil) -> FirewallTable {
        let capture = nameCapture(names, holding: !ruleset.namedNetworks.isEmpty)
        var sets: [FirewallSet] = capture.sets
        var previousChains: [FirewallChain] = []
        var armedInput: [FirewallRule] = [], armedOutput: [FirewallRule] = []
        if let openAfter {
            let target = fallback == nil ? "every packet is accepted" : "the last confirmed ruleset applies (prev_ chains)"
            sets.append(FirewallSet(name: armedSetName, fields: [.family], elements: [.init([.init(2)]), .init([.init(10)])],
                                    comment: "confirmation switch: once these expire, \(target)", elementTimeout: openAfter))
            if let fallback {
                let previous = enforcement(ruleset: fallback, management: management, logGroup: logGroup)
                sets += previous.sets.map { set in
                    var renamed = set
                    renamed.name = previousPrefix + set.name
                    renamed.comment = "last confirmed: " + (set.comment ?? "")
                    return renamed
                }
                for chain in previous.chains where chain.hook == .input || chain.hook == .output {
                    previousChains.append(FirewallChain(name: previousPrefix + chain.name, hook: nil,
                                                        rules: chain.rules.map(Self.renamingSets)))
                }
            }
            let guardMatch = FirewallRule.Match.familyNotInSet(name: armedSetName)
            armedInput = [FirewallRule(matches: [guardMatch], verdict: fallback == nil ? .accept : .jump(previousPrefix + "input"))]
            armedOutput = [FirewallRule(matches: [guardMatch], verdict: fallback == nil ? .accept : .jump(previousPrefix + "output"))]
        }
        // The copy of DNS answers first: it decides nothing, and so also runs while the
        // confirmation switch has fallen back.
        var input: [FirewallRule] = capture.rules + armedInput + [
            FirewallRule(matches: [.loopback(.incoming)], verdict: .accept),
            FirewallRule(matches: [.conntrackState([.established, .related])], verdict: .accept),
        ]
        // Guarded by the family: protocol 58 inside IPv4 is not neighbour discovery.
        input += neighbourDiscoveryTypes.map {
            FirewallRule(matches: [.family(.ipv6), .transport(IPProtocolNumber.icmpv6), .icmpv6Type($0)], verdict: .accept)
        }
        input.append(FirewallRule(matches: [.conntrackState([.invalid])], verdict: .drop))
        var output: [FirewallRule] = armedOutput + [
            FirewallRule(matches: [.loopback(.outgoing)], verdict: .accept),
            FirewallRule(matches: [.conntrackState([.established, .related])], verdict: .accept),
        ]
        output += neighbourDiscoveryTypes.map {
            FirewallRule(matches: [.family(.ipv6), .transport(IPProtocolNumber.icmpv6), .icmpv6Type($0)], verdict: .accept)
        }

        let allowed = AllowedBoxes(ruleset)
        let sources: [(prefix: String, comment: String, incoming: (AddressFamily) -> [FirewallSet.Box], outgoing: (AddressFamily) -> [FirewallSet.Box])] = [
            ("mgmt", "management channel: \(management.summary)", management.incomingBoxes, management.outgoingBoxes),
            ("allow", "ruleset", { allowed.incoming[$0] ?? [] }, { allowed.outgoing[$0] ?? [] }),
        ]
        for source in sources {
            for (side, boxesOf) in [(FirewallRule.Side.incoming, source.incoming), (.outgoing, source.outgoing)] {
                let direction = side == .incoming ? "in" : "out"
                for family in AddressFamily.allCases {
                    let boxes = boxesOf(family)
                    let portBoxes = boxes.filter { IPProtocolNumber.hasPorts($0.transport) }
                    let icmp: UInt8 = family == .ipv4 ? IPProtocolNumber.icmp : IPProtocolNumber.icmpv6
                    let icmpBoxes = boxes.filter { $0.transport == icmp }
                    let suffix = family == .ipv4 ? "v4" : "v6"
                    let address: FirewallSet.Field = family == .ipv4 ? .ipv4Address : .ipv6Address
                    var rules: [FirewallRule] = []
                    // Exact prefixes with single ports: one hash set per prefix length, longest first.
                    let (exact, ranges) = FirewallSet.exactElements(portBoxes, family: family)
                    for length in exact.keys.sorted(by: >) {
                        let set = FirewallSet(name: "\(source.prefix)_\(direction)_\(suffix)_p\(length)", fields: [address, .transport, .port],
                                              elements: exact[length]!.sorted { $0.spans.map(\.low).lexicographicallyPrecedes($1.spans.map(\.low)) },
                                              comment: "\(source.comment) (\(direction)bound, /\(length) prefixes, single ports)", exact: true)
                        sets.append(set)
                        let key = FirewallRule.SetKey(peer: side, fields: set.fields, addressPrefix: length == family.bitWidth ? nil : length)
                        rules.append(FirewallRule(matches: [.family(family), .inSet(name: set.name, key: key)], verdict: .accept))
                    }
                    if !ranges.isEmpty {
                        let set = FirewallSet(name: "\(source.prefix)_\(direction)_\(suffix)", fields: [address, .transport, .port],
                                              elements: FirewallSet.portElements(ranges), comment: "\(source.comment) (\(direction)bound)")
                        sets.append(set)
                        rules.append(FirewallRule(matches: [.family(family), .inSet(name: set.name, key: .init(peer: side, fields: set.fields))],
                                                  verdict: .accept))
                    }
                    // Networks too wide for the product: their addresses and their services as
                    // two sets, matched by a rule of their own.
                    for (index, wide) in (source.prefix == "allow" ? allowed.wide.filter { $0.incoming == (side == .incoming) && $0.family == family } : [])
                        .enumerated() {
                        let name = "\(source.prefix)_\(direction)_\(suffix)_w\(index + 1)"
                        let services = FirewallSet(name: name + "_svc", fields: [.transport, .port], elements: wide.serviceElements,
                                                   comment: "network \(wide.network) (\(direction)bound): its services")
                        sets.append(services)
                        let serviceMatch = FirewallRule.Match.inSet(name: services.name, key: .init(peer: side, fields: services.fields))
                        let byLength = wide.addressesByLength
                        if byLength[0] != nil {
                            rules.append(FirewallRule(matches: [.family(family), serviceMatch], verdict: .accept))
                            continue
                        }
                        for length in byLength.keys.sorted(by: >) {
                            let set = FirewallSet(name: "\(name)_p\(length)", fields: [address], elements: byLength[length]!,
                                                  comment: "network \(wide.network) (\(direction)bound): /\(length) entries", exact: true)
                            sets.append(set)
                            let key = FirewallRule.SetKey(peer: side, fields: set.fields, addressPrefix: length == family.bitWidth ? nil : length)
                            rules.append(FirewallRule(matches: [.family(family), .inSet(name: set.name, key: key), serviceMatch], verdict: .accept))
                        }
                    }
                    if !icmpBoxes.isEmpty {
                        let fields: [FirewallSet.Field] = family == .ipv4 ? [.ipv4Address, .icmpType, .icmpCode] : [.ipv6Address, .icmpv6Type, .icmpv6Code]
                        let set = FirewallSet(name: "\(source.prefix)_\(direction)_icmp_\(suffix)", fields: fields,
                                              elements: FirewallSet.icmpElements(icmpBoxes), comment: "\(source.comment) (\(direction)bound ICMP)")
                        sets.append(set)
                        rules.append(FirewallRule(matches: [.family(family), .transport(icmp),
                                                            .inSet(name: set.name, key: .init(peer: side, fields: set.fields))],
                                                  verdict: .accept))
                    }
                    if side == .incoming { input += rules } else { output += rules }
                }
            }
        }

        let named = nameSets(ruleset, capture: names)
        sets += named.sets
        input += named.input
        output += named.output

        input.append(FirewallRule(matches: [], counter: true, log: .init(prefix: inboundLogPrefix, group: logGroup), verdict: .drop))
        output.append(FirewallRule(matches: [], counter: true, log: .init(prefix: outboundLogPrefix, group: logGroup), verdict: nil))
        output.append(FirewallRule(matches: [.transport(IPProtocolNumber.tcp)], verdict: .reject(.tcpReset)))
        output.append(FirewallRule(matches: [], verdict: .reject(.adminProhibited)))

        // Regular chains first, so that a reader (and `nft -f`) meets them before the jumps.
        return FirewallTable(name: baseName, sets: sets, chains: previousChains + [
            FirewallChain(name: "input", hook: .input, policy: .drop, rules: input),
            // Routed traffic is not the host's own: a host ruleset has no forward rules, so it is
            // left as discovery has it (tracked, accepted).
            FirewallChain(name: "forward", hook: .forward, policy: .accept,
                          rules: [FirewallRule(matches: [.conntrackState([.established, .related])], verdict: .accept)]),
            FirewallChain(name: "output", hook: .output, policy: .drop, rules: output),
        ])
    }

    /// Entries × port services above which a network is installed as two sets (its addresses,
    /// its services) and a rule, not as the product in the shared sets: 100,000 entries × 64
    /// services would otherwise be 6.4 million elements, seconds to render and gigabytes to hold.
    public static let productLimit = 4096

    /// A network installed as two sets of its own, for one direction and family.
    struct WideNetwork {
        var network: String
        var incoming: Bool
        var family: AddressFamily
        /// Address-only elements, per prefix length (0: anywhere).
        var addressesByLength: [Int: [FirewallSet.Element]]
        /// `inet_proto . inet_service` ranges.
        var serviceElements: [FirewallSet.Element]

        init(network: String, incoming: Bool, family: AddressFamily, entries: [IPPrefix], services: [(UInt8, ClosedRange<UInt16>)]) {
            self.network = network
            self.incoming = incoming
            self.family = family
            var byLength: [Int: [FirewallSet.Element]] = [:]
            for span in FirewallSet.merge(entries.map(\.span)) {
                for prefix in FirewallSet.prefixes(span, width: family.bitWidth) {
                    byLength[prefix.length, default: []].append(FirewallSet.Element([FirewallSet.Span(prefix.address)]))
                }
            }
            addressesByLength = byLength
            var elements: [FirewallSet.Element] = []
            for transport in Set(services.map(\.0)).sorted() {
                let ranges = services.filter { $0.0 == transport }.map { FirewallSet.Span(UInt128($0.1.lowerBound), UInt128($0.1.upperBound)) }
                for range in FirewallSet.merge(ranges) { elements.append(FirewallSet.Element([FirewallSet.Span(UInt128(transport)), range])) }
            }
            serviceElements = elements
        }
    }

    /// A ruleset's allow rules as set boxes, per direction and family; networks past
    /// `productLimit` apart, as `wide`.
    struct AllowedBoxes {
        var incoming: [AddressFamily: [FirewallSet.Box]] = [:]
        var outgoing: [AddressFamily: [FirewallSet.Box]] = [:]
        var wide: [WideNetwork] = []

        init(_ ruleset: Ruleset) {
            for (rules, isIncoming) in [(ruleset.incoming, true), (ruleset.outgoing, false)] {
                for rule in rules {
                    guard let network = ruleset.network(named: rule.network) else { continue }
                    let ports: [(UInt8, ClosedRange<UInt16>)] = network.services.compactMap {
                        if case .ports(let transport, let range) = $0 { return (transport, range) }
                        return nil
                    }
                    var wideFamilies = Set<AddressFamily>()
                    for family in AddressFamily.allCases {
                        let entries = network.entries.filter { $0.family == family }
                        guard ports.count > 1, entries.count * ports.count > CordonTables.productLimit else { continue }
                        wideFamilies.insert(family)
                        wide.append(WideNetwork(network: network.name, incoming: isIncoming, family: family, entries: entries, services: ports))
                    }
                    for entry in network.entries {
                        for service in network.services {
                            if wideFamilies.contains(entry.family), case .ports = service { continue }
                            guard let box = Self.box(entry, service) else { continue }
                            if isIncoming { incoming[entry.family, default: []].append(box) } else { outgoing[entry.family, default: []].append(box) }
                        }
                    }
                }
            }
        }

        /// nil when the service cannot apply to the entry's family (ICMP to an IPv6 network).
        static func box(_ entry: IPPrefix, _ service: Service) -> FirewallSet.Box? {
            switch service {
            case .ports(let transport, let range):
                return FirewallSet.Box(addresses: entry.span, transport: transport, services: range)
            case .icmp(let transport, let type, let code):
                guard (transport == IPProtocolNumber.icmp) == (entry.family == .ipv4) else { return nil }
                let services: ClosedRange<UInt16>
                switch (type, code) {
                case (nil, _): services = 0...UInt16.max
                case (let type?, nil): services = UInt16(type) << 8...(UInt16(type) << 8 | 0xFF)
                case (let type?, let code?): services = (UInt16(type) << 8 | UInt16(code))...(UInt16(type) << 8 | UInt16(code))
                }
                return FirewallSet.Box(addresses: entry.span, transport: transport, services: services)
            }
        }
    }
}
