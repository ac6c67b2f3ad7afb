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

        /// From the client's node to the server's: `direction` is the flow's, seen from `own`.
        public init(_ direction: Direction, own: String, peer: String, service: String, state: EdgeState) {
            if direction == .inbound { self.init(from: peer, to: own, service: service, state: state) } else {
                self.init(from: own, to: peer, service: service, state: state)
            }
        }

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

    /// Where a flow's far end lands when no fleet host holds its address: a standard network by
    /// name, then the first DNS name programs used, then Somewhere, by service. It depends on the
    /// flow alone, so the server works it out once, at upload, and the map's query groups by it.
    public struct ExternalPeers: Sendable {
        let proposer: Proposer

        public init(standard: Ruleset) { proposer = Proposer(standard: standard) }

        public func node(_ key: FlowKey, names: [String]) -> Node {
            if let network = proposer.standardNetwork(for: key) { return Node(id: "net:" + network.name, kind: .network, label: network.name) }
            if let name = names.first { return Node(id: "name:" + name.lowercased(), kind: .name, label: name.lowercased()) }
            return Node(id: "somewhere:" + key.direction.rawValue + " " + Classifier.service(key), kind: .somewhere,
                        label: (key.direction == .inbound ? "from somewhere " : "somewhere ") + Classifier.service(key))
        }

        /// The node `node(_:names:)` made with this id, as the database gives the id back; nil
        /// for an id it does not make.
        public static func node(id: String) -> Node? {
            func rest(_ prefix: String) -> String? { id.hasPrefix(prefix) && id.count > prefix.count ? String(id.dropFirst(prefix.count)) : nil }
            if let name = rest("net:") { return Node(id: id, kind: .network, label: name) }
            if let name = rest("name:") { return Node(id: id, kind: .name, label: name) }
            guard let place = rest("somewhere:"), let space = place.firstIndex(of: " "),
                  let direction = Direction(rawValue: String(place[..<space])), direction != .forward else { return nil }
            return Node(id: id, kind: .somewhere, label: (direction == .inbound ? "from somewhere " : "somewhere ") + place[place.index(after: space)...])
        }
    }

    /// An edge's state: rejected by the policy in force; else amber when the assigned policy,
    /// not yet in force, would reject it; else allowed by a rule in force, or only discovered.
    public static func state(verdict: FlowVerdict, enforcing: Bool, pendingRejects: Bool = false) -> EdgeState {
        if verdict == .rejected { return .rejected }
        if pendingRejects { return .pending }
        return enforcing ? .allowed : .discovered
    }

    /// Where flows land. `fleet` is every host (east-west peers are found among them),
    /// `groupBy` the tag key hosts are grouped by (nil: each host its own node), `expanded` the
    /// groups shown as their hosts.
    public struct Classifier: Sendable {
        let groupBy: String?
        let expanded: Set<String>
        /// The fleet host holding each address: the first of `fleet` holding it (the server
        /// orders the fleet by name, then id).
        public let owners: [IPAddress: Host]
        public let external: ExternalPeers
        /// Each folded group's node by its tag value, made once: a map asks for a node once a
        /// host and once an address, and building its texts each time was a tenth of the map.
        private let groups: [String?: Node]

        public init(fleet: [Host], external: ExternalPeers, groupBy: String?, expanded: Set<String> = []) {
            self.groupBy = groupBy
            self.expanded = expanded
            var owners: [IPAddress: Host] = [:]
            owners.reserveCapacity(fleet.count)
            for host in fleet { for address in host.addresses where owners[address] == nil { owners[address] = host } }
            self.owners = owners
            self.external = external
            var groups: [String?: Node] = [:]
            if let key = groupBy {
                for host in fleet where groups[host.tags[key]] == nil {
                    let group = Self.group(key, host.tags[key])
                    if !expanded.contains(group.id) { groups[host.tags[key]] = group }
                }
            }
            self.groups = groups
        }

        public init(fleet: [Host], standard: Ruleset, groupBy: String?, expanded: Set<String> = []) {
            self.init(fleet: fleet, external: ExternalPeers(standard: standard), groupBy: groupBy, expanded: expanded)
        }

        /// The node a host is drawn in.
        public func node(of host: Host) -> Node {
            guard let key = groupBy else { return Node(id: "host:" + host.id, kind: .host, label: host.hostname) }
            let value = host.tags[key]
            if let group = groups[value] { return group }
            let group = Self.group(key, value)
            return expanded.contains(group.id) ? Node(id: "host:" + host.id, kind: .host, label: host.hostname) : group
        }

        static func group(_ key: String, _ value: String?) -> Node {
            Node(id: "group:" + key + "=" + (value ?? ""), kind: .group, label: value.map { key + "=" + $0 } ?? "no " + key)
        }

        /// The edge a flow of `host` lands on, with the peer's node; nil for forwarded traffic
        /// (the map shows what hosts talk to, not what they route).
        public func place(_ flow: FleetFlow, of host: Host) -> (key: EdgeKey, peer: Node, own: Node)? {
            let key = flow.key
            guard key.direction != .forward else { return nil }
            let own = node(of: host)
            let peer = peerNode(key, names: flow.names)
            let pendingRejects = key.verdict != .rejected && host.pending.map { $0.rule(allowing: key, names: flow.names) == nil } == true
            let edge = EdgeKey(key.direction, own: own.id, peer: peer.id, service: Self.service(key),
                               state: DependencyMap.state(verdict: key.verdict, enforcing: host.enforcing, pendingRejects: pendingRejects))
            return (edge, peer, own)
        }

        /// Both ends of an east-west connection report it: the client's report draws the edge,
        /// and the server's counts only when it refused the connection.
        public func countedByClient(_ key: FlowKey, selected: Set<String>) -> Bool {
            guard key.direction == .inbound, key.verdict == .allowed, key.remote.isHost, let client = owners[key.remote.address] else { return false }
            return selected.contains(client.id)
        }

        /// An east-west peer is the fleet host holding the address; else it is external.
        func peerNode(_ key: FlowKey, names: [String]) -> Node {
            if key.remote.isHost, let host = owners[key.remote.address] { return node(of: host) }
            return external.node(key, names: names)
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

        /// Nodes by id, edges by key: the order every picture and comparison uses.
        public func sorted() -> Graph {
            var graph = self
            graph.nodes.sort { $0.id < $1.id }
            graph.edges.sort { $0.key < $1.key }
            return graph
        }
    }

    /// Sums flows into a graph: a host's own flows one by one, or totals a database summed by
    /// edge already (`add(_:peer:connections:flows:)`); both give the same graph.
    public struct Builder {
        public let classifier: Classifier
        public let selected: Set<String>
        private var nodes: [String: Node] = [:]
        private var edges: [EdgeKey: Edge] = [:]
        private var flows = 0

        public init(classifier: Classifier, selected: [Host]) {
            self.classifier = classifier
            var ids = Set<String>(minimumCapacity: selected.count)
            for host in selected where ids.insert(host.id).inserted {
                let own = classifier.node(of: host)
                nodes[own.id, default: own].hosts += 1
            }
            self.selected = ids
        }

        /// Room for `count` edges, when the caller knows how many sums it will add.
        public mutating func reserve(edges count: Int) {
            edges.reserveCapacity(count)
            nodes.reserveCapacity(nodes.count + count)
        }

        /// `host`'s flows seen at or after `since` (unix seconds).
        public mutating func add(_ flows: [FleetFlow], of host: Host, since: Int64) {
            for flow in flows where flow.stats.lastSeen >= since && !classifier.countedByClient(flow.key, selected: selected) {
                guard let (key, peer, _) = classifier.place(flow, of: host) else { continue }
                add(key, peer: peer, connections: flow.stats.connections, flows: 1)
            }
        }

        public mutating func add(_ key: EdgeKey, peer: Node, connections: UInt64, flows: Int) {
            if nodes[peer.id] == nil { nodes[peer.id] = peer }
            edges[key, default: Edge(key: key, connections: 0, flows: 0)].connections &+= connections
            edges[key]!.flows += flows
            self.flows += flows
        }

        /// The graph in no set order (`Graph.sorted()`, `MapBudget.fit` order it): a map folds
        /// 10,000 nodes to 300 before ordering them. The nodes and edges are moved out, not
        /// copied: the builder is spent, and a second call gives an empty graph.
        public mutating func graph() -> Graph {
            var (nodes, edges) = ([String: Node](), [EdgeKey: Edge]())
            swap(&nodes, &self.nodes)
            swap(&edges, &self.edges)
            for edge in edges.values {
                nodes[edge.key.from]!.connections &+= edge.connections
                nodes[edge.key.to]!.connections &+= edge.connections
            }
            defer { flows = 0 }
            return Graph(nodes: Array(nodes.values), edges: Array(edges.values), hosts: selected.count, flows: flows)
        }
    }

    /// The graph of `selected` hosts' flows seen at or after `since` (unix seconds), before
    /// any folding or layout.
    public static func build(selected: [(host: Host, flows: [FleetFlow])], classifier: Classifier, since: Int64) -> Graph {
        var builder = Builder(classifier: classifier, selected: selected.map(\.host))
        for (host, flows) in selected { builder.add(flows, of: host, since: since) }
        return builder.graph().sorted()
    }
}
