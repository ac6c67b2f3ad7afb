/// Turns a week of recorded flows into a ruleset an analyst can read top to bottom.
///
/// Each standard network that matched a recorded flow becomes a network and its rules; servers
/// the host talks to (resolvers, NTP, LDAP, metadata) are narrowed to the addresses actually seen,
/// while networks whose peers cannot be known in advance (SSH clients, DHCP servers answering by
/// broadcast, ICMP from any router) stay wide with a comment naming what was seen. Everything no
/// standard network explains is "Somewhere": grouped by direction, protocol and port, and written
/// as commented-out candidates for the analyst to decide on. The output depends only on the input
/// (sorted throughout, no clock), so proposing twice from the same data gives the same file.
public struct Proposer: Sendable {
    public var standard: Ruleset
    public var serviceNames: ServiceNames
    /// Remote addresses listed in a comment before "and N more".
    public var listed = 8

    /// Networks narrowed to the servers seen. The others keep their standard entries.
    public static let narrowed: Set<String> = ["ntp", "dns", "ldap", "metadata"]

    public init(standard: Ruleset, serviceNames: ServiceNames = ServiceNames()) {
        self.standard = standard
        self.serviceNames = serviceNames
    }

    /// A group of leftover flows: one direction, protocol and port (or ICMP type/code), both
    /// address families.
    public struct Candidate: Hashable, Sendable {
        public var direction: Direction
        public var transport: UInt8
        public var service: UInt16
        public var remotes: [IPPrefix]
        public var connections: UInt64
        public var lastSeen: Int64

        /// Groups flows by direction, protocol and port (or ICMP type/code), both families in one
        /// candidate (one name, one rule); remotes sorted, groups in a stable order.
        public static func grouping(_ flows: [(key: FlowKey, stats: FlowStats)]) -> [Candidate] {
            struct Group: Hashable { var direction: Direction, transport: UInt8, service: UInt16 }
            var groups: [Group: Candidate] = [:]
            for (key, stats) in flows {
                let group = Group(direction: key.direction, transport: key.transport, service: key.service)
                var candidate = groups[group] ?? Candidate(direction: key.direction, transport: key.transport, service: key.service,
                                                           remotes: [], connections: 0, lastSeen: stats.lastSeen)
                candidate.remotes.append(key.remote)
                candidate.connections += stats.connections
                candidate.lastSeen = max(candidate.lastSeen, stats.lastSeen)
                groups[group] = candidate
            }
            // A peer seen allowed (discovery) and refused (enforcing) is one entry.
            return groups.values.map { var sorted = $0; sorted.remotes = Array(Set(sorted.remotes)).sorted(); return sorted }
                .sorted { ($0.direction.rawValue, $0.transport, $0.service) < ($1.direction.rawValue, $1.transport, $1.service) }
        }
    }

    public struct Proposal: Sendable {
        public var ruleset: Ruleset
        public var candidates: [Candidate]
        /// Per proposed network: the flows it explains (for comments and for review).
        public var seen: [String: [IPPrefix]]
        public var connections: [String: UInt64]
    }

    /// The standard network (with its usage) that explains a flow, if any.
    public func standardNetwork(for key: FlowKey) -> ExternalNetwork? {
        guard key.direction != .forward else { return nil }
        return standard.networks.first { network in
            let usage = network.usage ?? .both
            let fits = usage == .both || (usage == .incoming) == (key.direction == .inbound)
            return fits && network.contains(remote: key.remote, transport: key.transport, service: key.service)
        }
    }

    public func propose(_ flows: [(key: FlowKey, stats: FlowStats)]) -> Proposal {
        var seen: [String: Set<IPPrefix>] = [:]
        var counts: [String: UInt64] = [:]
        var directions: [String: Set<Direction>] = [:]
        var leftovers: [(key: FlowKey, stats: FlowStats)] = []
        for (key, stats) in flows {
            guard let network = standardNetwork(for: key) else {
                leftovers.append((key, stats))
                continue
            }
            seen[network.name, default: []].insert(key.remote)
            counts[network.name, default: 0] += stats.connections
            directions[network.name, default: []].insert(key.direction)
        }
        var ruleset = Ruleset(name: "proposed", description: "Proposed by cordon propose from recorded flows; review before approving.",
                              networks: [])
        for network in standard.networks where seen[network.name] != nil {
            var proposed = network
            if Self.narrowed.contains(network.name) {
                proposed.entries = seen[network.name]!.sorted()
            }
            ruleset.networks.append(proposed)
            let usage = network.usage ?? .both
            let observed = directions[network.name] ?? []
            // A both-ways network seen in either direction gets both rules: a DHCP client's
            // requests go out and the server's broadcast answers come in.
            if usage == .incoming || (usage == .both && !observed.isEmpty) { ruleset.incoming.append(Rule(network: network.name)) }
            if usage == .outgoing || (usage == .both && !observed.isEmpty) { ruleset.outgoing.append(Rule(network: network.name)) }
        }
        let candidates = Candidate.grouping(leftovers)
        return Proposal(ruleset: ruleset, candidates: candidates, seen: seen.mapValues { $0.sorted() }, connections: counts)
    }
}
