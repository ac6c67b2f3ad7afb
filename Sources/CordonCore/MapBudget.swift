/// What a browser can draw and a person can read: Hubble's UI hangs near 3,000 pods, Illumio's
/// map stops at 2,000 objects. Past the budget the quietest nodes fold into two "other" nodes
/// (their members listed, for expanding or the table), and the quietest edges are left out with
/// a count, rejected and pending ones last of all.
public enum MapBudget {
    public static let nodes = 300
    public static let edges = 1500
    public static let otherGroups = "other:groups"
    public static let otherNetworks = "other:networks"

    public struct Fitted: Sendable, Equatable {
        public var graph: DependencyMap.Graph
        /// Edges left out, and the connections on them: the page says so and offers the table.
        public var hiddenEdges: Int
        public var hiddenConnections: UInt64

        public init(graph: DependencyMap.Graph, hiddenEdges: Int, hiddenConnections: UInt64) {
            self.graph = graph
            self.hiddenEdges = hiddenEdges
            self.hiddenConnections = hiddenConnections
        }
    }

    public static func fit(_ graph: DependencyMap.Graph, nodes maxNodes: Int = nodes, edges maxEdges: Int = edges) -> Fitted {
        var graph = graph
        if graph.nodes.count > maxNodes { graph = fold(graph, budget: max(maxNodes - 2, 2)) }
        guard graph.edges.count > maxEdges else { return Fitted(graph: graph, hiddenEdges: 0, hiddenConnections: 0) }
        // Red and amber first: what is refused, or would be, is what the map is for.
        let ranked = graph.edges.sorted { ($0.key.state, $0.connections, $1.key) > ($1.key.state, $1.connections, $0.key) }
        let hidden = ranked[maxEdges...]
        graph.edges = ranked.prefix(maxEdges).sorted { $0.key < $1.key }
        return Fitted(graph: graph, hiddenEdges: hidden.count, hiddenConnections: hidden.reduce(0) { $0 &+ $1.connections })
    }

    /// Keeps the busiest fleet nodes and networks, shared out so that neither side crowds the
    /// other out entirely, and folds the rest.
    static func fold(_ graph: DependencyMap.Graph, budget: Int) -> DependencyMap.Graph {
        let busiest: (DependencyMap.Node, DependencyMap.Node) -> Bool = { ($0.connections, $1.id) > ($1.connections, $0.id) }
        let fleet = graph.nodes.filter(\.isFleet).sorted(by: busiest)
        let networks = graph.nodes.filter { !$0.isFleet }.sorted(by: busiest)
        let fleetKept = min(fleet.count, max(budget / 2, budget - networks.count))
        let networksKept = min(networks.count, budget - fleetKept)
        var renamed: [String: String] = [:]
        var nodes = Array(fleet.prefix(fleetKept)) + Array(networks.prefix(networksKept))
        for (folded, id, label) in [(fleet.dropFirst(fleetKept), otherGroups, "other groups"),
                                    (networks.dropFirst(networksKept), otherNetworks, "other networks")] where !folded.isEmpty {
            var other = DependencyMap.Node(id: id, kind: .other, label: "\(folded.count) \(label)", hosts: folded.reduce(0) { $0 + $1.hosts },
                                           connections: folded.reduce(0) { $0 &+ $1.connections })
            other.members = folded.map(\.id).sorted()
            for node in folded { renamed[node.id] = id }
            nodes.append(other)
        }
        var edges: [DependencyMap.EdgeKey: DependencyMap.Edge] = [:]
        for edge in graph.edges {
            var key = edge.key
            key.from = renamed[key.from] ?? key.from
            key.to = renamed[key.to] ?? key.to
            edges[key, default: DependencyMap.Edge(key: key, connections: 0, flows: 0)].connections &+= edge.connections
            edges[key]!.flows += edge.flows
        }
        var folded = graph
        folded.nodes = nodes.sorted { $0.id < $1.id }
        folded.edges = edges.values.sorted { $0.key < $1.key }
        return folded
    }
}
