import CordonCore
import Foundation
import Testing

/// The dependency map's aggregation, folding and layout: pure, so checked without a server.
@Suite struct DependencyMapTests {
    typealias Map = DependencyMap
    let now: Int64 = 1_800_000_000

    func standard() throws -> Ruleset {
        try RulesetParser.parse(try String(contentsOfFile: ProposerTests.standardPath, encoding: .utf8), file: ProposerTests.standardPath)
    }

    func host(_ n: Int, tier: String?, enforcing: Bool = false) -> Map.Host {
        Map.Host(id: "h\(n)", hostname: "host-\(n)", tags: tier.map { ["tier": $0] } ?? [:], addresses: [IPAddress("192.0.2.\(n)")!], enforcing: enforcing)
    }

    func flow(_ local: Int, _ remote: String, port: UInt16, transport: UInt8 = IPProtocolNumber.tcp, direction: Direction = .outbound,
              verdict: FlowVerdict = .allowed, connections: UInt64 = 1, names: [String] = [], seen: Int64? = nil) -> FleetFlow {
        FleetFlow(key: FlowKey(direction: direction, transport: transport, local: IPAddress("192.0.2.\(local)")!, remote: IPPrefix(remote)!,
                               service: port, verdict: verdict),
                  stats: FlowStats(connections: connections, firstSeen: now - 100, lastSeen: seen ?? now - 10), names: names)
    }

    @Test func flowsLandOnTheirPeersNodeInTheirState() throws {
        let web = host(1, tier: "web", enforcing: true), db = host(2, tier: "db"), lone = host(3, tier: nil)
        let classifier = Map.Classifier(fleet: [web, db, lone], standard: try standard(), groupBy: "tier")
        let graph = Map.build(selected: [
            (web, [flow(1, "192.0.2.2", port: 5432, connections: 9),
                   flow(1, "192.0.2.53", port: 53, transport: IPProtocolNumber.udp),
                   flow(1, "203.0.113.9", port: 443, names: ["API.Example.com"]),
                   flow(1, "198.51.100.4", port: 8080, verdict: .rejected),
                   flow(1, "198.51.100.5", port: 8080, seen: now - 8 * 86400)]),
            (db, [flow(2, "192.0.2.1", port: 5432, direction: .inbound, connections: 9)]),
            (lone, [flow(3, "198.51.100.4", port: 8080)]),
        ], classifier: classifier, since: now - 7 * 86400)
        let ids = graph.nodes.map(\.id)
        #expect(ids == ids.sorted())
        #expect(Set(ids) == ["group:tier=web", "group:tier=db", "group:tier=", "net:dns", "name:api.example.com", "somewhere:outbound tcp/8080"])
        #expect(graph.nodes.first { $0.id == "group:tier=" }?.label == "no tier")
        let edges = Dictionary(grouping: graph.edges, by: { "\($0.key.from)>\($0.key.to)" })
        #expect(edges["group:tier=web>group:tier=db"]?.map(\.key.state) == [.allowed], "the server's inbound report is the client's edge")
        #expect(edges["group:tier=web>group:tier=db"]?.first?.connections == 9)
        #expect(edges["group:tier=web>net:dns"]?.first?.key.service == "udp/53")
        #expect(edges["group:tier=web>somewhere:outbound tcp/8080"]?.map(\.key.state) == [.rejected], "the flow older than the window is left out")
        #expect(edges["group:tier=>somewhere:outbound tcp/8080"]?.map(\.key.state) == [.discovered])
        // Seven flows: one is older than the window, and the database's side of web's connection is web's edge.
        #expect(graph.flows == 5)
    }

    @Test func aPendingPolicyTurnsWhatItWouldRejectAmber() throws {
        let pending = try RulesetParser.parse("""
            networks:
              - name: dns
                entries: [192.0.2.53]
                services: [udp/53]
            outgoing:
              - to: dns
            """, file: "pending.yaml")
        var web = host(1, tier: "web", enforcing: true)
        web.pending = Review.CompiledRules(pending)
        let classifier = Map.Classifier(fleet: [web], standard: Ruleset(networks: []), groupBy: "tier")
        let graph = Map.build(selected: [(web, [flow(1, "192.0.2.53", port: 53, transport: IPProtocolNumber.udp), flow(1, "198.51.100.4", port: 443)])],
                              classifier: classifier, since: 0)
        #expect(graph.edges.map(\.key.state).sorted() == [.allowed, .pending])
    }

    @Test func anEdgeIDRoundTrips() {
        let key = Map.EdgeKey(from: "group:tier=web", to: "somewhere:outbound icmp 8/0", service: "icmp 8/0", state: .pending)
        #expect(Map.EdgeKey(id: key.id) == key)
        #expect(Map.EdgeKey(id: "a|b|c") == nil)
        #expect(Map.EdgeKey(id: "a|b|c|green") == nil)
    }

    /// `groups` fleet nodes each with one edge to its own network, connections rising with n,
    /// and one rejected edge from the quietest.
    func wide(groups: Int) -> Map.Graph {
        var nodes: [Map.Node] = [], edges: [Map.Edge] = []
        for n in 0..<groups {
            nodes.append(Map.Node(id: String(format: "group:g=%04d", n), kind: .group, label: "g=\(n)", hosts: 1, connections: UInt64(n + 1)))
            nodes.append(Map.Node(id: String(format: "name:n%04d", n), kind: .name, label: "n\(n)", connections: UInt64(n + 1)))
            edges.append(Map.Edge(key: .init(from: nodes[2 * n].id, to: nodes[2 * n + 1].id, service: "tcp/443", state: n == 0 ? .rejected : .allowed),
                                  connections: UInt64(n + 1), flows: 1))
        }
        return Map.Graph(nodes: nodes.sorted { $0.id < $1.id }, edges: edges.sorted { $0.key < $1.key }, hosts: groups, flows: groups)
    }

    @Test func pastTheBudgetTheQuietestFoldAndRejectedEdgesStay() {
        let fitted = MapBudget.fit(wide(groups: 1000))
        #expect(fitted.graph.nodes.count <= MapBudget.nodes)
        let other = fitted.graph.nodes.first { $0.id == MapBudget.otherGroups }
        #expect(other?.members.count == 1000 - 149, "149 busiest groups kept, the rest folded")
        #expect(other?.members.contains("group:g=0000") == true)
        #expect(fitted.graph.nodes.contains { $0.id == "group:g=0999" })
        // The quietest group's rejected edge is still drawn, folded onto "other".
        #expect(fitted.graph.edges.contains { $0.key.state == .rejected && $0.key.from == MapBudget.otherGroups })
        let before = wide(groups: 1000).edges.reduce(0) { $0 + $1.connections }
        #expect(fitted.graph.edges.reduce(0) { $0 + $1.connections } == before, "folding merges edges, it loses no connection")

        let edgesOnly = MapBudget.fit(wide(groups: 100), nodes: 1000, edges: 10)
        #expect(edgesOnly.graph.edges.count == 10)
        #expect(edgesOnly.hiddenEdges == 90)
        #expect(edgesOnly.graph.edges.contains { $0.key.state == .rejected }, "rejected edges are the last left out")
        #expect(MapBudget.fit(wide(groups: 10)) == MapBudget.Fitted(graph: wide(groups: 10), hiddenEdges: 0, hiddenConnections: 0))
    }

    /// The store hands the graph over in no set order; what is drawn does not depend on it.
    @Test(arguments: [10, 1000])
    func fittingDoesNotDependOnTheOrderGiven(groups: Int) {
        var generator = SystemRandomNumberGenerator()
        var shuffled = wide(groups: groups)
        shuffled.nodes.shuffle(using: &generator)
        shuffled.edges.shuffle(using: &generator)
        #expect(shuffled != wide(groups: groups))
        #expect(MapBudget.fit(shuffled) == MapBudget.fit(wide(groups: groups)))
    }

    @Test func theLayoutIsTheSameForTheSameDataAndNothingOverlaps() {
        let graph = MapBudget.fit(wide(groups: 60)).graph
        let placed = MapLayout.place(graph)
        var shuffled = graph
        shuffled.nodes.reverse()
        shuffled.edges.reverse()
        let again = MapLayout.place(shuffled)
        let a = Dictionary(uniqueKeysWithValues: placed.nodes.map { ($0.id, ($0.x, $0.y)) })
        let b = Dictionary(uniqueKeysWithValues: again.nodes.map { ($0.id, ($0.x, $0.y)) })
        #expect(a.keys.sorted() == b.keys.sorted())
        for (id, p) in a { #expect(b[id]! == p, "\(id) moved with the input's order") }
        let points = Array(a.values)
        var closest = Double.infinity
        for i in points.indices { for j in points.indices where j > i { closest = min(closest, hypot(points[i].0 - points[j].0, points[i].1 - points[j].1)) } }
        #expect(closest >= MapLayout.spacing * 0.99, "nodes \(closest) apart")
        // Networks are outside the grid of groups.
        let reach = placed.nodes.filter(\.isFleet).map { hypot($0.x, $0.y) }.max()!
        #expect(placed.nodes.filter { !$0.isFleet }.allSatisfy { hypot($0.x, $0.y) > reach })
    }

    @Test func aNetworkFacesTheGroupsItTalksTo() {
        let nodes = [Map.Node(id: "group:a", kind: .group, label: "a"), Map.Node(id: "group:b", kind: .group, label: "b"),
                     Map.Node(id: "name:x", kind: .name, label: "x"), Map.Node(id: "name:y", kind: .name, label: "y")]
        let edges = [Map.Edge(key: .init(from: "group:a", to: "name:x", service: "tcp/1", state: .allowed), connections: 5, flows: 1),
                     Map.Edge(key: .init(from: "group:b", to: "name:y", service: "tcp/1", state: .allowed), connections: 5, flows: 1)]
        let placed = MapLayout.place(Map.Graph(nodes: nodes, edges: edges, hosts: 2, flows: 2))
        let p = Dictionary(uniqueKeysWithValues: placed.nodes.map { ($0.id, $0) })
        // a is left of b on the grid: x sits left, y right.
        #expect(p["group:a"]!.x < p["group:b"]!.x)
        #expect(p["name:x"]!.x < p["name:y"]!.x)
    }
}
