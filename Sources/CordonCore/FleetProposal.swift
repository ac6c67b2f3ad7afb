/// One ruleset proposed for a tier from the merged record of its hosts, saying for every network
/// and candidate how many of the hosts agree: the tier's rules are what most of it does, and what
/// one host alone does is listed apart as that host's, never mixed into the tier's rules.
public enum FleetProposal {
    public struct Host: Sendable {
        public var name: String
        /// The records as keys and totals, read once: a tier of 1,000 hosts holds 2M of them, and
        /// the records' text would be most of the memory and time.
        var flows: [FleetFlow]
        public init(name: String, flows: [FleetFlow]) {
            self.name = name
            self.flows = flows
        }
        public init(name: String, flows: [FlowRecord]) {
            self.init(name: name, flows: flows.compactMap(FleetFlow.init))
        }
    }

    /// An enrolled host by one of its addresses: east-west flows to it are named by its tags.
    public struct Peer: Sendable {
        public var address: IPAddress
        public var hostname: String
        public var tags: [String: String]
        public init(address: IPAddress, hostname: String, tags: [String: String]) {
            self.address = address
            self.hostname = hostname
            self.tags = tags
        }
    }

    public struct Result: Sendable {
        public var text: String
        public var hosts: Int
        public var flows: Int
        /// Candidates seen on enough hosts (commented out in the file, for the analyst).
        public var candidates: Int
        public var outliers: Int
    }

    struct Group: Hashable { var direction: Direction, transport: UInt8, service: UInt16 }

    /// A merged flow's key in three words: the local address is none in particular, so it is
    /// only its family. Hashing it is a third of hashing a `FlowKey`, once for each of 2M rows.
    struct MergeKey: Hashable {
        let kind: UInt64, high: UInt64, low: UInt64

        init(_ key: FlowKey) {
            let direction: UInt64 = key.direction == .inbound ? 0 : key.direction == .outbound ? 1 : 2
            kind = direction | UInt64(key.transport) << 8 | UInt64(key.service) << 16 | UInt64(key.remote.length) << 32
                | (key.remote.family == .ipv6 ? 1 << 40 : 0) | (key.local.family == .ipv6 ? 1 << 41 : 0) | (key.verdict == .rejected ? 1 << 42 : 0)
            high = key.remote.address.high
            low = key.remote.address.low
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(kind)
            hasher.combine(high)
            hasher.combine(low)
        }
    }

    /// One peer and service across the tier: its totals, the hosts (by index) it was seen on, and
    /// the names it was looked up by.
    struct Merged {
        var key: FlowKey
        var stats = FlowStats(connections: 0, packets: 0, bytes: 0, firstSeen: .max, lastSeen: .min)
        /// Ascending and unique: the hosts are merged one after the other, so a host already
        /// counted is the last one (an append, not a set's hash, for each of 2M rows).
        var hosts: [Int] = []
        /// Unique; most flows have one name or none, so a list compared by value, not a set
        /// hashed for every row, until it is long.
        var names: [String] = []
        var manyNames: Set<String> = []

        init(key: FlowKey) { self.key = key }

        mutating func add(_ more: FlowStats, host: Int, names moreNames: [String]) {
            stats = FlowStats(connections: stats.connections &+ more.connections, packets: stats.packets &+ more.packets,
                              bytes: stats.bytes &+ more.bytes, firstSeen: min(stats.firstSeen, more.firstSeen), lastSeen: max(stats.lastSeen, more.lastSeen))
            if hosts.last != host { hosts.append(host) }
            for name in moreNames where !names.contains(name) {
                if names.count < 16 { names.append(name) } else { manyNames.insert(name) }
            }
        }

        var allNames: [String] { (names + manyNames).sorted() }
    }

    /// Which of the tier's hosts (by index) a network or group was seen on, a bit each: the union
    /// over a tier's merged flows is words ORed, not a set's hash for each of some million
    /// (flow, host) pairs.
    struct HostBits {
        var words: [UInt64]
        init(hosts: Int) { words = Array(repeating: 0, count: (hosts + 63) / 64) }
        mutating func insert(_ hosts: [Int]) { for host in hosts { words[host >> 6] |= 1 << UInt64(host & 63) } }
        var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }
    }

    /// The host's own address of a merged flow: none in particular.
    static let anyV4 = IPAddress(ipv4: 0), anyV6 = IPAddress("::")!

    /// Outliers listed a host; the count says how many more it has.
    public static let outliersShown = 20

    /// The tier's flows merged across its hosts, a host at a time as each is read: the same peer
    /// and service from every host is one flow (the local address is each host's own, and the
    /// proposal never reads it). 2M rows of a tier of 1,000 hosts become some thousands, summed
    /// as the proposer would; merging while the next hosts are still being read keeps the merge
    /// off the request's critical path.
    public struct Tier: Sendable {
        let since: Int64
        var hosts: [Host] = []
        var merged: [MergeKey: Merged] = [:]
        var rows = 0

        /// - Parameter since: only flows last seen at or after this Unix time count.
        public init(since: Int64) { self.since = since }

        func counted(_ key: FlowKey, _ stats: FlowStats) -> Bool { stats.lastSeen >= since && key.verdict == .allowed && key.direction != .forward }

        static func anonymous(_ key: FlowKey) -> FlowKey {
            var key = key
            key.local = key.local.family == .ipv4 ? FleetProposal.anyV4 : FleetProposal.anyV6
            return key
        }

        public mutating func add(_ host: Host) {
            let index = hosts.count
            for flow in host.flows where counted(flow.key, flow.stats) {
                rows += 1
                merged[MergeKey(flow.key), default: Merged(key: Self.anonymous(flow.key))].add(flow.stats, host: index, names: flow.names)
            }
            hosts.append(host)
        }
    }

    /// - Parameter minCoverage: percent of the hosts a candidate must be seen on to be the tier's.
    public static func propose(selector: String, hosts: [Host], peers: [Peer], since: Int64, minCoverage: Int, standard: Ruleset,
                               names: ServiceNames, listed: Int = 8) -> Result {
        var tier = Tier(since: since)
        for host in hosts { tier.add(host) }
        return propose(selector: selector, tier: tier, peers: peers, minCoverage: minCoverage, standard: standard, names: names, listed: listed)
    }

    public static func propose(selector: String, tier: Tier, peers: [Peer], minCoverage: Int, standard: Ruleset,
                               names: ServiceNames, listed: Int = 8) -> Result {
        let proposer = Proposer(standard: standard, serviceNames: names)
        let (hosts, merged, rows, since) = (tier.hosts, tier.merged.values, tier.rows, tier.since)
        let counted = tier.counted
        // Which hosts each network and each group of the rest was seen on: per merged flow, not
        // per row (the standard networks are matched some thousand times, not 2M).
        var networkHosts: [String: HostBits] = [:], groupHosts: [Group: HostBits] = [:]
        var firstSeen: [Group: Int64] = [:]
        for seen in merged {
            let key = seen.key
            if let network = proposer.standardNetwork(for: key) {
                networkHosts[network.name, default: HostBits(hosts: hosts.count)].insert(seen.hosts)
            } else {
                let group = Group(direction: key.direction, transport: key.transport, service: key.service)
                groupHosts[group, default: HostBits(hosts: hosts.count)].insert(seen.hosts)
                firstSeen[group] = min(firstSeen[group] ?? seen.stats.firstSeen, seen.stats.firstSeen)
            }
        }
        let flowNames = Dictionary(uniqueKeysWithValues: merged.filter { !$0.names.isEmpty }.map { ($0.key, $0.allNames) })
        let proposal = proposer.propose(merged.map { ($0.key, $0.stats) }, names: flowNames)
        let total = max(hosts.count, 1)
        func coverage(_ count: Int) -> String { "seen on \(count) of \(hosts.count) host\(hosts.count == 1 ? "" : "s")" }
        func group(_ c: Proposer.Candidate) -> Group { Group(direction: c.direction, transport: c.transport, service: c.service) }
        let tier = proposal.candidates.filter { (groupHosts[group($0)]?.count ?? 0) * 100 >= minCoverage * total }
        let outlierGroups = Set(proposal.candidates.filter { (groupHosts[group($0)]?.count ?? 0) * 100 < minCoverage * total }.map(group))

        var out: [String] = [
            "# Proposed by `cordon fleet propose` for \(selector) from the merged record of \(hosts.count) host\(hosts.count == 1 ? "" : "s") "
                + "(\(rows) flow aggregates, last seen since \(TimeText.rfc3339(since))).",
            "# Each network and candidate says on how many of the hosts it was seen. Candidates seen on fewer than \(minCoverage)% of",
            "# them are outliers, listed per host at the end and not part of the tier's rules.",
            "# Check it with `cordon fleet review FILE`; approve it with `cordon fleet approve FILE --name NAME`.",
            "name: proposed",
            "description: \(ProposalText.quoted("Proposed by cordon fleet propose for \(selector); review before approving."))",
            "appliesTo: '\(selector.replacingOccurrences(of: "'", with: "''"))'",
            "",
            "networks:",
        ]
        for network in proposal.ruleset.networks {
            let seen = proposal.seen[network.name] ?? []
            let connections = proposal.connections[network.name] ?? 0
            out.append("  # \(network.name): \(coverage(networkHosts[network.name]?.count ?? 0)), \(connections) connection\(connections == 1 ? "" : "s") "
                       + "with \(seen.count) address\(seen.count == 1 ? "" : "es"): \(ProposalText.list(seen, listed))")
            out.append(contentsOf: ProposalText.block(network, indent: "  "))
        }
        var candidateNames: [Group: String] = [:]
        // A fleet of 10,000 hosts is 10,000 peers: looked up by address, and their tags counted once.
        let peersAt = Dictionary(grouping: peers, by: \.address)
        var carried: [String: [String: Int]] = [:]
        for peer in peers { for (key, value) in peer.tags { carried[key, default: [:]][value, default: 0] += 1 } }
        if !tier.isEmpty {
            out.append("")
            out.append("  # Somewhere: flows no standard network explains, seen on at least \(minCoverage)% of the hosts. To allow one,")
            out.append("  # uncomment its network here and its rule below. Entries are the addresses seen; widen them only on purpose.")
            for candidate in tier {
                var network = ProposalText.network(for: candidate, names: names)
                let g = group(candidate)
                out.append("  #")
                out.append("  # \(ProposalText.summary(candidate, names: names, listed: listed)); \(coverage(groupHosts[g]?.count ?? 0)), "
                           + "first seen \(TimeText.rfc3339(firstSeen[g] ?? candidate.lastSeen))")
                // East-west: remotes that are enrolled hosts, named by the tag they share.
                let inside = candidate.remotes.flatMap { remote in
                    Int(remote.length) == remote.address.family.bitWidth ? peersAt[remote.address] ?? [] : peers.filter { remote.contains($0.address) }
                }
                if !inside.isEmpty {
                    let shared = inside.dropFirst().reduce(inside[0].tags) { common, peer in common.filter { peer.tags[$0.key] == $0.value } }
                    let hostsText = Array(Set(inside.map(\.hostname))).sorted().prefix(listed).joined(separator: ", ")
                    // The tag that names a group of the fleet, not one host: the shared one the
                    // most enrolled hosts carry (role=db over env=prod when only db-1 is prod).
                    func carriers(_ tag: (key: String, value: String)) -> Int { carried[tag.key]?[tag.value] ?? 0 }
                    if let (key, value) = shared.sorted(by: { carriers($0) != carriers($1) ? carriers($0) > carriers($1) : $0.key < $1.key }).first {
                        network.name = String(("east-west-\(ProposalText.sanitized(key))-\(ProposalText.sanitized(value))-" + network.name)
                            .prefix(RulesetLimits.nameLength))
                        out.append("  # east-west: enrolled hosts with \(key)=\(value) (\(hostsText))")
                    } else {
                        out.append("  # east-west: enrolled hosts with no tag in common (\(hostsText))")
                    }
                }
                candidateNames[g] = network.name
                out.append(contentsOf: ProposalText.block(network, indent: "  ").map { "  # " + $0.dropFirst(2) })
            }
        }
        for (title, rules, key, direction) in [("incoming", proposal.ruleset.incoming, "from", Direction.inbound),
                                                ("outgoing", proposal.ruleset.outgoing, "to", Direction.outbound)] {
            out.append("")
            out.append("\(title):")
            for rule in rules { out.append("  - \(key): \(rule.network)") }
            for candidate in tier where candidate.direction == direction { out.append("  # - \(key): \(candidateNames[group(candidate)] ?? "")") }
        }
        var outliers = 0
        // A second pass over the hosts for the outliers' groups: most flows are the tier's, and a
        // copy of every host's leftovers would double the memory for the few that are not.
        let outlierLines = hosts.sorted { $0.name < $1.name }.flatMap { host -> [String] in
            let own = host.flows.filter { flow in
                counted(flow.key, flow.stats) && outlierGroups.contains(Group(direction: flow.key.direction, transport: flow.key.transport, service: flow.key.service))
                    && proposer.standardNetwork(for: flow.key) == nil
            }
            // The busiest first, and a bounded number a host: the file stays one an analyst reads
            // and a review accepts (a tier of 1,000 noisy hosts listed 190,000 lines). Only the
            // groups shown are made candidates; the rest are counted.
            var totals: [Group: UInt64] = [:]
            for flow in own { totals[Group(direction: flow.key.direction, transport: flow.key.transport, service: flow.key.service), default: 0] += flow.stats.connections }
            outliers += totals.count
            let top = Set(totals.sorted { ($0.value, $1.key.service, $1.key.direction.rawValue, $1.key.transport) > ($1.value, $0.key.service, $0.key.direction.rawValue, $0.key.transport) }
                .prefix(outliersShown).map(\.key))
            let shown = Proposer.Candidate.grouping(own.filter { top.contains(Group(direction: $0.key.direction, transport: $0.key.transport, service: $0.key.service)) }
                .map { ($0.key, $0.stats) })
                .sorted { ($0.connections, $1.service, $1.direction.rawValue, $1.transport) > ($1.connections, $0.service, $0.direction.rawValue, $0.transport) }
            return shown.map { "#   \(host.name): \(ProposalText.summary($0, names: names, listed: listed)); \(coverage(groupHosts[group($0)]?.count ?? 0))" }
                + (totals.count > outliersShown ? ["#   \(host.name): and \(totals.count - outliersShown) more (all of its flows: GET /api/v1/hosts/{id}/flows)"] : [])
        }
        if !outlierLines.isEmpty {
            out.append("")
            out.append("# Outliers: seen on fewer than \(minCoverage)% of the hosts, so not the tier's. Per host; allow one in a ruleset")
            out.append("# assigned to that host alone, or find out why it does what its tier does not:")
            out.append(contentsOf: outlierLines)
        }
        return Result(text: out.joined(separator: "\n") + "\n", hosts: hosts.count, flows: rows, candidates: tier.count, outliers: outliers)
    }
}
