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
        /// Outbound only: the names programs looked these remotes up by, sorted.
        public var names: [String] = []
        /// The remotes no lookup named: what a candidate by name still lists by address.
        public var unnamed: [IPPrefix] = []

        /// Groups flows by direction, protocol and port (or ICMP type/code), both families in one
        /// candidate (one name, one rule); remotes sorted, groups in a stable order.
        /// - Parameter names: per flow, the names its connections were looked up by (the asked-for
        ///   names, not the CNAME targets: a proposal allows what a program asked for).
        public static func grouping(_ flows: [(key: FlowKey, stats: FlowStats)], names: [FlowKey: [String]] = [:]) -> [Candidate] {
            struct Group: Hashable { var direction: Direction, transport: UInt8, service: UInt16 }
            // Remotes and names gather in sets beside the candidates, changed in place: a copy of
            // a candidate per flow made a fleet's merged record (2M flows) quadratic.
            var groups: [Group: Candidate] = [:]
            var remotes: [Group: Set<IPPrefix>] = [:], groupNames: [Group: Set<String>] = [:], named: [Group: Set<IPPrefix>] = [:]
            for (key, stats) in flows {
                let group = Group(direction: key.direction, transport: key.transport, service: key.service)
                if groups[group] == nil {
                    groups[group] = Candidate(direction: key.direction, transport: key.transport, service: key.service, remotes: [], connections: 0,
                                              lastSeen: stats.lastSeen)
                }
                groups[group]!.connections += stats.connections
                groups[group]!.lastSeen = max(groups[group]!.lastSeen, stats.lastSeen)
                remotes[group, default: []].insert(key.remote)
                if key.direction == .outbound, let flowNames = names[key], !flowNames.isEmpty {
                    groupNames[group, default: []].formUnion(flowNames)
                    named[group, default: []].insert(key.remote)
                }
            }
            // A peer seen allowed (discovery) and refused (enforcing) is one entry.
            return groups.map { group, candidate in
                var sorted = candidate
                sorted.remotes = (remotes[group] ?? []).sorted()
                sorted.names = (groupNames[group] ?? []).sorted()
                sorted.unnamed = sorted.remotes.filter { !(named[group]?.contains($0) ?? false) }
                return sorted
            }
            .sorted { ($0.direction.rawValue, $0.transport, $0.service) < ($1.direction.rawValue, $1.transport, $1.service) }
        }

        /// The candidate's names as ruleset entries: a wildcard `*.domain` where at least
        /// `siblingThreshold` different names sit one label under the same domain (bucket names,
        /// per-customer hosts: the next one will be new), each other name as itself.
        public var namePatterns: [NamePattern] {
            var byParent: [String: [String]] = [:]
            for name in names {
                guard let dot = name.firstIndex(of: ".") else { continue }
                byParent[String(name[name.index(after: dot)...]), default: []].append(name)
            }
            var patterns: [NamePattern] = []
            var covered = Set<String>()
            for (parent, siblings) in byParent.sorted(by: { $0.key < $1.key }) where siblings.count >= Proposer.siblingThreshold {
                // NamePattern refuses a wildcard over a bare top-level domain (`*.com`).
                guard let pattern = try? NamePattern(parsing: "*." + parent) else { continue }
                patterns.append(pattern)
                covered.formUnion(siblings)
            }
            for name in names where !covered.contains(name) {
                if let pattern = try? NamePattern(parsing: name) { patterns.append(pattern) }
            }
            return patterns
        }
    }

    /// Different names one label under a domain from which a proposal offers `*.domain`.
    public static let siblingThreshold = 3

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

    /// - Parameter names: per flow, the names programs looked its remote up by (see `Candidate.grouping`).
    public func propose(_ flows: [(key: FlowKey, stats: FlowStats)], names: [FlowKey: [String]] = [:]) -> Proposal {
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
        let candidates = Candidate.grouping(leftovers, names: names)
        return Proposal(ruleset: ruleset, candidates: candidates, seen: seen.mapValues { $0.sorted() }, connections: counts)
    }
}
