import CordonCore
import CordonWire
import Foundation
import Hummingbird

/// `/api/v1/map`: the dependency map of one host or a selector's hosts over a time window,
/// aggregated, folded to what a browser can draw, and laid out here, so that the same data
/// always gives the same picture. `/api/v1/map/flows` lists the flows behind one of its edges.
struct MapController {
    let stores: Stores
    let deadline: DatabaseDeadline
    static let largestPage = 500
    static let windows = ["1h", "24h", "7d", "30d"]

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("map", use: deadline(map, seconds: 30))
        group.get("map/flows", use: deadline(flows, seconds: 30))
        group.get("map/edges", use: deadline(edges, seconds: 30))
    }

    /// What the query asks for, validated field by field.
    struct View {
        var selector: Selector?
        var host: UUID?
        var window: String
        var since: Int64
        var group: String?
        var expand: Set<String>

        init(_ query: [String: String], now: Int64) throws {
            window = query["window"] ?? "7d"
            guard MapController.windows.contains(window), let span = TimeText.duration(window) else {
                throw APIFailure(.badRequest, "expected one of \(MapController.windows.joined(separator: ", "))", field: "window")
            }
            since = now - span
            selector = try query["selector"].map { try HostSelection.parse($0) }
            host = try query["host"].map { try JSON.uuid($0, field: "host") }
            if selector != nil, host != nil { throw APIFailure(.badRequest, "give a host or a selector, not both", field: "host") }
            if let group = query["group"], !group.isEmpty {
                guard group.count <= 63, group.allSatisfy({ $0.isLetter || $0.isNumber || "-_./".contains($0) }) else {
                    throw APIFailure(.badRequest, "expected a tag key", field: "group")
                }
                self.group = group
            }
            expand = Set((query["expand"] ?? "").split(separator: ",").map(String.init).prefix(MapBudget.nodes))
        }
    }

    /// The hosts the view selects and the classifier over every host (east-west peers are found
    /// among them), grouping by the tag key asked for, else (for a selector) the key most of the
    /// selected hosts carry, else none.
    private func load(_ view: View) async throws -> (selected: [DependencyMap.Host], classifier: DependencyMap.Classifier, group: String?) {
        let fleet = DependencyMap.Host.fleet(try await stores.hosts.mapHosts())
        let selected: [DependencyMap.Host]
        if let id = view.host {
            let text = id.uuidString.lowercased()
            guard let host = fleet.first(where: { $0.id == text }) else { throw APIFailure(.notFound, "no host with id \(text)", field: "host") }
            selected = [host]
        } else if let selector = view.selector {
            let ids = Set(HostSelection.matching(selector, in: try await stores.hosts.directory()).map { $0.id.uuidString.lowercased() })
            selected = fleet.filter { ids.contains($0.id) }
        } else {
            selected = fleet
        }
        var group = view.group
        if group == nil, view.host == nil {
            var counts: [String: Int] = [:]
            for host in selected { for key in host.tags.keys { counts[key, default: 0] += 1 } }
            group = counts.max { ($0.value, $1.key) < ($1.value, $0.key) }?.key
        }
        return (selected, DependencyMap.Classifier(fleet: fleet, external: .server, groupBy: group, expanded: view.expand), group)
    }

    @Sendable func map(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let view = try View(Self.query(request), now: Int64(Date().timeIntervalSince1970))
        let (selected, classifier, group) = try await load(view)
        let fitted = MapBudget.fit(try await stores.flows.graph(of: selected, classifier: classifier, since: view.since))
        let placed = MapLayout.place(fitted.graph)
        return JSON.response(MapView(
            window: view.window, since: TimeText.rfc3339(view.since), groupBy: group, hosts: placed.hosts, flows: placed.flows,
            hiddenEdges: fitted.hiddenEdges, hiddenConnections: fitted.hiddenConnections,
            nodes: placed.nodes.map { MapView.Node(id: $0.id, kind: $0.kind.rawValue, label: $0.label, hosts: $0.hosts, connections: $0.connections,
                                                   members: $0.members, x: $0.x, y: $0.y) },
            edges: placed.edges.map { MapView.Edge(id: $0.key.id, from: $0.key.from, to: $0.key.to, service: $0.key.service, state: $0.key.state.rawValue,
                                                   connections: $0.connections, flows: $0.flows) }))
    }

    /// The flows behind one edge of the map the same view draws, busiest first, paged. An edge
    /// between nodes the map drew as they are needs no map; one to a folded node (`other:*`)
    /// needs the fold's members, so the map is built for it.
    @Sendable func flows(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let query = Self.query(request)
        let view = try View(query, now: Int64(Date().timeIntervalSince1970))
        guard let text = query["edge"], let edge = DependencyMap.EdgeKey(id: text) else {
            throw APIFailure(.badRequest, "expected an edge id from the map (from|to|service|state)", field: "edge")
        }
        let (offset, limit) = try Paging.parse(limit: query["limit"], offset: query["offset"], largest: Self.largestPage, defaultLimit: 100)
        let (selected, classifier, _) = try await load(view)
        var members: [String: [String]] = [:]
        if [MapBudget.otherGroups, MapBudget.otherNetworks].contains(where: { $0 == edge.from || $0 == edge.to }) {
            let fitted = MapBudget.fit(try await stores.flows.graph(of: selected, classifier: classifier, since: view.since))
            for node in fitted.graph.nodes where !node.members.isEmpty { members[node.id] = node.members }
        }
        let page = try await stores.flows.flows(on: edge, members: members, of: selected, classifier: classifier, since: view.since,
                                                offset: offset, limit: limit)
        return JSON.response(Page(items: page.items, total: page.total))
    }

    /// Every edge of the view's graph, none folded, busiest first, paged: the table for what the
    /// picture leaves out past its budget. Each id lists its flows as a drawn edge's does.
    @Sendable func edges(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let query = Self.query(request)
        let view = try View(query, now: Int64(Date().timeIntervalSince1970))
        let (offset, limit) = try Paging.parse(limit: query["limit"], offset: query["offset"], largest: Self.largestPage, defaultLimit: 100)
        let (selected, classifier, _) = try await load(view)
        let graph = try await stores.flows.graph(of: selected, classifier: classifier, since: view.since)
        var labels: [String: String] = [:]
        for node in graph.nodes { labels[node.id] = node.label }
        let busiest = graph.edges.sorted { ($0.connections, $1.key) > ($1.connections, $0.key) }
        let page = busiest.dropFirst(offset).prefix(limit).map { edge in
            var row = MapView.Edge(id: edge.key.id, from: edge.key.from, to: edge.key.to, service: edge.key.service, state: edge.key.state.rawValue,
                                   connections: edge.connections, flows: edge.flows)
            (row.fromLabel, row.toLabel) = (labels[edge.key.from], labels[edge.key.to])
            return row
        }
        return JSON.response(Page(items: Array(page), total: busiest.count))
    }

    static func query(_ request: Request) -> [String: String] {
        var query: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { query[String(name)] = String(value) }
        return query
    }
}

extension DependencyMap.Host {
    /// The map's hosts from the store's rows; hosts sharing a waiting policy share its parse (a
    /// policy that does not parse waits with nothing amber).
    public static func fleet(_ rows: [MapHostRow]) -> [DependencyMap.Host] {
        var compiled: [String: Review.CompiledRules?] = [:]
        return rows.map { row in
            var pending: Review.CompiledRules?
            if let digest = row.waitingDigest, let content = row.waitingPolicy {
                if compiled[digest] == nil {
                    compiled[digest] = .some((try? RulesetParser.parse(content, file: "effective.yaml")).map(Review.CompiledRules.init))
                }
                pending = compiled[digest] ?? nil
            }
            return DependencyMap.Host(id: row.id.uuidString.lowercased(), hostname: row.hostname, tags: row.tags,
                                      addresses: row.addresses.compactMap { IPAddress($0) }, enforcing: row.enforcing, pending: pending)
        }
    }
}

extension DependencyMap.ExternalPeers {
    /// The map's standard networks: the installed file (or the source tree's, in development),
    /// read once; none found (a server installed without them) leaves those flows to names and
    /// Somewhere.
    public static let server = DependencyMap.ExternalPeers(standard: (try? StandardNetworks.load()) ?? Ruleset(networks: [], incoming: [], outgoing: []))
}
