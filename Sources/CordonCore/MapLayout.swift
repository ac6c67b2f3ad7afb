import Foundation

/// Positions for the map, computed on the server so that the same data always gives the same
/// picture: a refresh, another analyst's screen and an exported SVG agree. Fleet nodes sit on a
/// square grid in the middle (by id); networks sit on a ring around it, each turned toward the
/// groups it talks to, spaced so that none overlap.
public enum MapLayout {
    public static let spacing = 120.0

    public static func place(_ graph: DependencyMap.Graph) -> DependencyMap.Graph {
        var graph = graph
        let fleet = graph.nodes.indices.filter { graph.nodes[$0].isFleet }.sorted { graph.nodes[$0].id < graph.nodes[$1].id }
        let side = max(1, Int(Double(fleet.count).squareRoot().rounded(.up)))
        let middle = Double(side - 1) / 2
        var position: [String: (x: Double, y: Double)] = [:]
        for (n, index) in fleet.enumerated() {
            let column = n % side, row = n / side
            let rows = (fleet.count + side - 1) / side
            let point = ((Double(column) - middle) * spacing, (Double(row) - Double(rows - 1) / 2) * spacing)
            graph.nodes[index].x = point.0
            graph.nodes[index].y = point.1
            position[graph.nodes[index].id] = point
        }
        let networks = graph.nodes.indices.filter { !graph.nodes[$0].isFleet }
        guard !networks.isEmpty else { return graph }
        // Each network's preferred direction: the connection-weighted mean of its fleet peers'.
        var pull: [String: (x: Double, y: Double)] = [:]
        for edge in graph.edges {
            for (network, peer) in [(edge.key.to, edge.key.from), (edge.key.from, edge.key.to)] {
                guard let p = position[peer], position[network] == nil else { continue }
                let weight = Double(max(edge.connections, 1)).squareRoot()
                pull[network, default: (0, 0)].x += p.x * weight
                pull[network, default: (0, 0)].y += p.y * weight
            }
        }
        func angle(_ id: String) -> Double {
            guard let p = pull[id], p.x != 0 || p.y != 0 else { return -Double.pi / 2 }
            return atan2(p.y, p.x)
        }
        let ordered = networks.sorted { (angle(graph.nodes[$0].id), graph.nodes[$0].id) < (angle(graph.nodes[$1].id), graph.nodes[$1].id) }
        let count = Double(ordered.count)
        let step = 2 * Double.pi / count
        // Turned as a whole so that, on average, each network lands where it pulls.
        var sine = 0.0, cosine = 0.0
        for (n, index) in ordered.enumerated() {
            let delta = angle(graph.nodes[index].id) - step * Double(n)
            sine += sin(delta)
            cosine += cos(delta)
        }
        let turn = sine == 0 && cosine == 0 ? 0 : atan2(sine, cosine)
        // Clear of the grid's corners by one spacing, and wide enough that neighbours on the ring
        // are a spacing apart.
        let corner = middle * spacing * 2.0.squareRoot()
        let radius = max(corner + spacing, count * spacing / (2 * Double.pi))
        for (n, index) in ordered.enumerated() {
            let theta = turn + step * Double(n)
            graph.nodes[index].x = (radius * cos(theta) * 10).rounded() / 10
            graph.nodes[index].y = (radius * sin(theta) * 10).rounded() / 10
        }
        return graph
    }
}
