/// The console's dependency map: host groups in the middle, what they talk to around them.
///
/// A flow lands on one edge: from its client's node to its server's node (so both ends of an
/// east-west connection describe the same edge), by protocol and port, in one of four states.
/// The same classification builds the map and lists an edge's flows, so a click shows exactly
/// the flows the edge was drawn from.
public enum DependencyMap {
    /// Drawn dashed, green, amber and red; ordered by how much an analyst needs to see it.
    public enum EdgeState: String, Sendable, Codable, CaseIterable, Comparable {
        /// Seen on a host that enforces nothing yet: no rule says anything of it.
        case discovered
        /// A rule in force let it through.
        case allowed
        /// Let through now, but the policy assigned to the host and not yet in force would reject it.
        case pending
        /// Rejected by the policy in force.
        case rejected

        public static func < (a: EdgeState, b: EdgeState) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
    }

    public enum NodeKind: String, Sendable, Codable {
        /// Hosts sharing a tag's value (or one host, expanded or mapped alone).
        case group, host
        /// A standard network by its name; a name programs looked the peers up by; an address
        /// nothing explains, by the service it was reached on ("Somewhere").
        case network, name, somewhere
        /// Nodes folded together to keep the picture within its budget.
        case other
    }

    public struct Node: Sendable, Equatable {
        public var id: String
        public var kind: NodeKind
        public var label: String
        /// Hosts of the selection in it (groups and hosts); zero for the networks.
        public var hosts: Int
        /// Connections on its edges: how busy it is, for folding the quietest first.
        public var connections: UInt64
        /// The ids folded into an `other` node.
        public var members: [String] = []
        public var x: Double = 0
        public var y: Double = 0

        public init(id: String, kind: NodeKind, label: String, hosts: Int = 0, connections: UInt64 = 0) {
            self.id = id
            self.kind = kind
            self.label = label
            self.hosts = hosts
            self.connections = connections
        }

        public var isFleet: Bool { kind == .group || kind == .host || id == MapBudget.otherGroups }
    }

    public struct EdgeKey: Hashable, Sendable, Comparable {
        public var from: String
        public var to: String
        /// `tcp/443`, `udp/53`, `icmp 8/0`.
        public var service: String
        public var state: EdgeState

        public init(from: String, to: String, service: String, state: EdgeState) {
            self.from = from
            self.to = to
            self.service = service
            self.state = state
        }

        public static func < (a: EdgeKey, b: EdgeKey) -> Bool { (a.from, a.to, a.service, a.state) < (b.from, b.to, b.service, b.state) }

        /// What the console passes back to list the edge's flows.
        public var id: String { [from, to, service, state.rawValue].joined(separator: "|") }

        public init?(id: String) {
            let parts = id.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 4, let state = EdgeState(rawValue: parts[3]) else { return nil }
            self.init(from: parts[0], to: parts[1], service: parts[2], state: state)
        }
    }

    public struct Edge: Sendable, Equatable {
        public var key: EdgeKey
        public var connections: UInt64
        /// Flow aggregates behind it.
        public var flows: Int

        public init(key: EdgeKey, connections: UInt64, flows: Int) {
            self.key = key
            self.connections = connections
            self.flows = flows
        }
    }

    /// A host of the fleet as the map needs it.
    public struct Host: Sendable {
        public var id: String
        public var hostname: String
        public var tags: [String: String]
        public var addresses: [IPAddress]
        /// Its agent enforces a policy: what it let through, a rule allowed.
        public var enforcing: Bool
        /// The policy assigned to it and not yet in force, when there is one: what it would reject is amber.
        public var pending: Review.CompiledRules?

        public init(id: String, hostname: String, tags: [String: String], addresses: [IPAddress], enforcing: Bool,
                    pending: Review.CompiledRules? = nil) {
            self.id = id
            self.hostname = hostname
            self.tags = tags
            self.addresses = addresses
            self.enforcing = enforcing
            self.pending = pending
        }
    }

    /// Where flows land. `fleet` is every host (east-west peers are found among them),
    /// `groupBy` the tag key hosts are grouped by (nil: each host its own node), `expanded` the
    /// groups shown as their hosts.
    public struct Classifier: Sendable {
        let groupBy: String?
        let expanded: Set<String>
        let owners: [IPAddress: Host]
        let proposer: Proposer

        public init(fleet: [Host], standard: Ruleset, groupBy: String?, expanded: Set<String> = []) {
            self.groupBy = groupBy
            self.expanded = expanded
            var owners: [IPAddress: Host] = [:]
            for host in fleet { for address in host.addresses where owners[address] == nil { owners[address] = host } }
            self.owners = owners
            proposer = Proposer(standard: standard)
        }

        /// The node a host is drawn in.
        public func node(of host: Host) -> Node {
            guard let key = groupBy else { return Node(id: "host:" + host.id, kind: .host, label: host.hostname) }
            let value = host.tags[key]
            let group = "group:" + key + "=" + (value ?? "")
            if expanded.contains(group) { return Node(id: "host:" + host.id, kind: .host, label: host.hostname) }
            return Node(id: group, kind: .group, label: value.map { key + "=" + $0 } ?? "no " + key)
        }

        /// The edge a flow of `host` lands on, with the peer's node; nil for forwarded traffic
        /// (the map shows what hosts talk to, not what they route).
        public func place(_ flow: FleetFlow, of host: Host) -> (key: EdgeKey, peer: Node, own: Node)? {
            let key = flow.key
            guard key.direction != .forward else { return nil }
            let own = node(of: host)
            let peer = peerNode(key, names: flow.names)
            let state: EdgeState
            if key.verdict == .rejected {
                state = .rejected
            } else if let pending = host.pending, pending.rule(allowing: key, names: flow.names) == nil {
                state = .pending
            } else {
                state = host.enforcing ? .allowed : .discovered
            }
            let service = Self.service(key)
            let edge = key.direction == .outbound ? EdgeKey(from: own.id, to: peer.id, service: service, state: state)
                                                  : EdgeKey(from: peer.id, to: own.id, service: service, state: state)
            return (edge, peer, own)
        }

        /// An east-west peer is the fleet host holding the address; then a standard network by
        /// name; then the first DNS name programs used; then Somewhere, by service.
        func peerNode(_ key: FlowKey, names: [String]) -> Node {
            if key.remote.isHost, let host = owners[key.remote.address] { return node(of: host) }
            if let network = proposer.standardNetwork(for: key) { return Node(id: "net:" + network.name, kind: .network, label: network.name) }
            if let name = names.first { return Node(id: "name:" + name.lowercased(), kind: .name, label: name.lowercased()) }
            let where_ = key.direction == .inbound ? "from somewhere" : "somewhere"
            let service = Self.service(key)
            return Node(id: "somewhere:" + key.direction.rawValue + " " + service, kind: .somewhere, label: where_ + " " + service)
        }

        public static func service(_ key: FlowKey) -> String {
            let transport = IPProtocolNumber.name(key.transport)
            if IPProtocolNumber.isICMP(key.transport) { return "\(transport) \(key.service >> 8)/\(key.service & 0xff)" }
            return IPProtocolNumber.hasPorts(key.transport) ? "\(transport)/\(key.service)" : transport
        }
    }

    public struct Graph: Sendable, Equatable {
        public var nodes: [Node]
        public var edges: [Edge]
        /// Hosts and flows the map was drawn from.
        public var hosts: Int
        public var flows: Int

        public init(nodes: [Node], edges: [Edge], hosts: Int, flows: Int) {
            self.nodes = nodes
            self.edges = edges
            self.hosts = hosts
            self.flows = flows
        }
    }

    /// The graph of `selected` hosts' flows seen at or after `since` (unix seconds), before
    /// any folding or layout.
    public static func build(selected: [(host: Host, flows: [FleetFlow])], classifier: Classifier, since: Int64) -> Graph {
        var nodes: [String: Node] = [:]
        var members: [String: Set<String>] = [:]
        var edges: [EdgeKey: Edge] = [:]
        var count = 0
        let selectedIDs = Set(selected.map(\.host.id))
        for (host, flows) in selected {
            let own = classifier.node(of: host)
            if nodes[own.id] == nil { nodes[own.id] = own }
            members[own.id, default: []].insert(host.id)
            for flow in flows where flow.stats.lastSeen >= since {
                // Both ends of an east-west connection report it; the client's report draws the
                // edge unless the server refused it.
                if flow.key.direction == .inbound, flow.key.verdict == .allowed, flow.key.remote.isHost,
                   let client = classifier.owners[flow.key.remote.address], selectedIDs.contains(client.id) { continue }
                guard let (key, peer, _) = classifier.place(flow, of: host) else { continue }
                if nodes[peer.id] == nil { nodes[peer.id] = peer }
                edges[key, default: Edge(key: key, connections: 0, flows: 0)].connections &+= flow.stats.connections
                edges[key]!.flows += 1
                count += 1
            }
        }
        for (id, hosts) in members { nodes[id]!.hosts = hosts.count }
        for edge in edges.values {
            nodes[edge.key.from]!.connections &+= edge.connections
            nodes[edge.key.to]!.connections &+= edge.connections
        }
        return Graph(nodes: nodes.values.sorted { $0.id < $1.id }, edges: edges.values.sorted { $0.key < $1.key },
                     hosts: selected.count, flows: count)
    }
}
