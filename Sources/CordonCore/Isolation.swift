extension CordonTables {
    /// The emergency overlay: a table of its own, so that adding and removing it never touches
    /// the base table (discovery or the enforced ruleset) underneath.
    public static let isolationName = "cordon_isolate"
    /// Before the base table's chains (priority 0). Order does not decide the outcome — a packet
    /// must be accepted by every base chain — but the isolation drop then costs the least.
    public static let isolationPriority: Int32 = -10

    /// Lets through only the management channel, in both directions, and drops everything else,
    /// established connections included (no conntrack rule: a session opened before isolation
    /// dies with the rest). Replies are matched by the peer's port (`th sport`), statelessly.
    /// Forwarded traffic is dropped too. IPv6 neighbour discovery stays, or the collector's
    /// IPv6 address becomes unreachable.
    public static func isolation(management: ManagementChannel) -> FirewallTable {
        var sets: [FirewallSet] = []
        var input: [FirewallRule] = [FirewallRule(matches: [.loopback(.incoming)], verdict: .accept)]
        var output: [FirewallRule] = [FirewallRule(matches: [.loopback(.outgoing)], verdict: .accept)]
        for range in neighbourDiscoveryTypes {
            let rule = FirewallRule(matches: [.family(.ipv6), .transport(IPProtocolNumber.icmpv6), .icmpv6Type(range)], verdict: .accept)
            input.append(rule)
            output.append(rule)
        }
        // Errors coming in (destination unreachable, fragmentation needed, packet too big): on a
        // path with a smaller MTU the collector's session stalls without them. They open nothing.
        input.append(FirewallRule(matches: [.family(.ipv4), .transport(IPProtocolNumber.icmp), .icmpType(3...3)], verdict: .accept))
        input.append(FirewallRule(matches: [.family(.ipv6), .transport(IPProtocolNumber.icmpv6), .icmpv6Type(1...2)], verdict: .accept))
        for family in AddressFamily.allCases {
            let suffix = family == .ipv4 ? "v4" : "v6"
            let address: FirewallSet.Field = family == .ipv4 ? .ipv4Address : .ipv6Address
            let icmp: UInt8 = family == .ipv4 ? IPProtocolNumber.icmp : IPProtocolNumber.icmpv6
            let outgoing = management.outgoingBoxes(family), incoming = management.incomingBoxes(family)
            let fields: [FirewallSet.Field] = [address, .transport, .port]
            /// A set of connections opened from `opener`'s side: matched on the port going that
            /// way, and on the same port as the source of the replies coming back.
            func connections(_ name: String, _ boxes: [FirewallSet.Box], opener: FirewallRule.Side, _ comment: String) {
                let ported = boxes.filter { IPProtocolNumber.hasPorts($0.transport) }
                guard !ported.isEmpty else { return }
                let set = FirewallSet(name: name, fields: fields, elements: FirewallSet.portElements(ported), comment: comment)
                sets.append(set)
                let replies: FirewallRule.Side = opener == .outgoing ? .incoming : .outgoing
                let there = FirewallRule(matches: [.family(family), .inSet(name: name, key: .init(peer: opener, fields: fields))], verdict: .accept)
                let back = FirewallRule(matches: [.family(family), .inSet(name: name, key: .init(peer: replies, fields: fields, sourcePort: true))],
                                        verdict: .accept)
                if opener == .outgoing { output.append(there); input.append(back) } else { input.append(there); output.append(back) }
            }
            // Connections this host opens (collectors, resolvers, extras), and those the extra
            // whitelist opens to this host.
            connections("mgmt_out_\(suffix)", outgoing, opener: .outgoing, "management channel: \(management.summary) (connections out)")
            connections("mgmt_in_\(suffix)", incoming, opener: .incoming, "management channel: extra whitelist (connections in)")
            // ICMP with the extra whitelist's ICMP entries, both ways.
            let icmpBoxes = (outgoing + incoming).filter { $0.transport == icmp }
            if !icmpBoxes.isEmpty {
                let icmpFields: [FirewallSet.Field] = family == .ipv4 ? [.ipv4Address, .icmpType, .icmpCode] : [.ipv6Address, .icmpv6Type, .icmpv6Code]
                let set = FirewallSet(name: "mgmt_icmp_\(suffix)", fields: icmpFields, elements: FirewallSet.icmpElements(icmpBoxes),
                                      comment: "management channel: extra whitelist (ICMP)")
                sets.append(set)
                for side in [FirewallRule.Side.incoming, .outgoing] {
                    let rule = FirewallRule(matches: [.family(family), .transport(icmp), .inSet(name: set.name, key: .init(peer: side, fields: icmpFields))],
                                            verdict: .accept)
                    if side == .incoming { input.append(rule) } else { output.append(rule) }
                }
            }
        }
        input.append(FirewallRule(matches: [], counter: true, verdict: .drop))
        output.append(FirewallRule(matches: [], counter: true, verdict: .drop))
        return FirewallTable(name: isolationName, sets: sets, chains: [
            FirewallChain(name: "input", hook: .input, priority: isolationPriority, policy: .drop, rules: input),
            FirewallChain(name: "forward", hook: .forward, priority: isolationPriority, policy: .drop,
                          rules: [FirewallRule(matches: [], counter: true, verdict: .drop)]),
            FirewallChain(name: "output", hook: .output, priority: isolationPriority, policy: .drop, rules: output),
        ])
    }
}
