extension CordonTables {
    /// Log prefix of the DNS responses copied to the agent.
    public static let nameLogPrefix = "cordon-dns"

    /// Where the agent learns names: the responses of these resolvers, copied to this NFLOG group.
    public struct NameCapture: Hashable, Sendable {
        public var resolvers: [IPAddress]
        public var group: UInt16

        public init(resolvers: [IPAddress], group: UInt16) {
            self.resolvers = resolvers
            self.group = group
        }

        /// The group next to the rejected-packet group: one setting (`log_group`) places both.
        public static func group(after logGroup: UInt16) -> UInt16 { logGroup == .max ? logGroup - 1 : logGroup + 1 }
    }

    /// A set of the resolvers' DNS ports and, first in the input chain, a rule that copies what
    /// they send back on connections this host opened (conntrack's established: a reply) to the
    /// agent. It has no verdict, so it decides nothing: the packet goes on to the rules below,
    /// and is not held. An answer from any other address, or one no query of this host asked
    /// for (conntrack's new), is never copied: a forged answer teaches nothing.
    static func nameCapture(_ capture: NameCapture?) -> (sets: [FirewallSet], rules: [FirewallRule]) {
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
                                      log: .init(prefix: nameLogPrefix, group: capture.group), verdict: nil))
        }
        return (sets, rules)
    }
}
