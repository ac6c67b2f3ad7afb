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

    /// The graph within the budget, nodes by id and edges by key whatever order they came in.
    public static func fit(_ graph: DependencyMap.Graph, nodes maxNodes: Int = nodes, edges maxEdges: Int = edges) -> Fitted {
        var graph = graph.nodes.count > maxNodes ? fold(graph, budget: max(maxNodes - 2, 2)) : graph.sorted()
        guard graph.edges.count > maxEdges else { return Fitted(graph: graph, hiddenEdges: 0, hiddenConnections: 0) }
        // Red and amber first: what is refused, or would be, is what the map is for.
        let ranked = graph.edges.sorted { ($0.key.state, $0.connections, $1.key) > ($1.key.state, $1.connections, $0.key) }
        let hidden = ranked[maxEdges...]
        graph.edges = ranked.prefix(maxEdges).sorted { $0.key < $1.key }
        return Fitted(graph: graph, hiddenEdges: hidden.count, hiddenConnections: hidden.reduce(0) { $0 &+ $1.connections })
    }

    /// Keeps the busiest fleet nodes and networks, shared out so that neither side crowds the
    /// other out entirely, and folds the rest. Nodes are ranked by index, not moved, and only the
    /// edges touching a folded node are merged: the rest are already distinct.
    static func fold(_ graph: DependencyMap.Graph, budget: Int) -> DependencyMap.Graph {
        let all = graph.nodes
        let busiest: (Int, Int) -> Bool = { (all[$0].connections, all[$1].id) > (all[$1].connections, all[$0].id) }
        let fleet = all.indices.filter { all[$0].isFleet }.sorted(by: busiest)
        let networks = all.indices.filter { !all[$0].isFleet }.sorted(by: busiest)
        let fleetKept = min(fleet.count, max(budget / 2, budget - networks.count))
        let networksKept = min(networks.count, budget - fleetKept)
        var renamed: [String: String] = [:]
        renamed.reserveCapacity(all.count - fleetKept - networksKept)
        var nodes = (fleet.prefix(fleetKept) + networks.prefix(networksKept)).map { all[$0] }
        for (folded, id, label) in [(fleet.dropFirst(fleetKept), otherGroups, "other groups"),
                                    (networks.dropFirst(networksKept), otherNetworks, "other networks")] where !folded.isEmpty {
            var other = DependencyMap.Node(id: id, kind: .other, label: "\(folded.count) \(label)", hosts: folded.reduce(0) { $0 + all[$1].hosts },
                                           connections: folded.reduce(0) { $0 &+ all[$1].connections })
            other.members = folded.map { all[$0].id }.sorted()
            for index in folded { renamed[all[index].id] = id }
            nodes.append(other)
        }
        var edges: [DependencyMap.Edge] = []
        var merged: [DependencyMap.EdgeKey: Int] = [:]
        for edge in graph.edges {
            let (from, to) = (renamed[edge.key.from], renamed[edge.key.to])
            // Edges between kept nodes are distinct already, unless the graph was folded before.
            guard from != nil || to != nil || edge.key.from.hasPrefix("other:") || edge.key.to.hasPrefix("other:") else {
                edges.append(edge)
                continue
            }
            var key = edge.key
            key.from = from ?? key.from
            key.to = to ?? key.to
            if let at = merged[key] {
                edges[at].connections &+= edge.connections
                edges[at].flows += edge.flows
            } else {
                merged[key] = edges.count
                edges.append(DependencyMap.Edge(key: key, connections: edge.connections, flows: edge.flows))
            }
        }
        var folded = graph
        folded.nodes = nodes.sorted { $0.id < $1.id }
        folded.edges = edges.sorted { $0.key < $1.key }
        return folded
    }
}
