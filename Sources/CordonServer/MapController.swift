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
    /// The standard networks named on the map, read once; none found (a server installed
    /// without them) leaves those flows to names and Somewhere.
    static let standard = StandardNetworks.server()
    static let largestPage = 500
    static let windows = ["1h", "24h", "7d", "30d"]

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("map", use: deadline(map, seconds: 30))
        group.get("map/flows", use: deadline(flows, seconds: 30))
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

    /// The hosts the view selects and every host (east-west peers are found among them), with
    /// the tag key the map groups by: the one asked for, else (for a selector) the key most of
    /// the selected hosts carry, else none.
    private func load(_ view: View) async throws -> (selected: [DependencyMap.Host], classifier: DependencyMap.Classifier, group: String?) {
        let all = try await stores.hosts.hosts(limit: 100_000)
        // Hosts share effective policies: each is parsed once.
        var compiled: [String: Review.CompiledRules?] = [:]
        let fleet = all.map { host in
            var pending: Review.CompiledRules?
            if let assigned = host.policy.assigned, assigned.digest != host.policy.inForceDigest {
                if compiled[assigned.digest] == nil {
                    compiled[assigned.digest] = .some((try? RulesetParser.parse(assigned.content, file: "effective.yaml")).map(Review.CompiledRules.init))
                }
                pending = compiled[assigned.digest] ?? nil
            }
            return DependencyMap.Host(id: host.id, hostname: host.hostname, tags: host.tags, addresses: host.addresses.compactMap { IPAddress($0) },
                                      enforcing: host.mode == "enforce", pending: pending)
        }
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
        return (selected, DependencyMap.Classifier(fleet: fleet, standard: Self.standard, groupBy: group, expanded: view.expand), group)
    }

    private func graph(_ view: View) async throws -> (fitted: MapBudget.Fitted, selected: Int, group: String?,
                                                      flows: [(DependencyMap.Host, [FleetFlow])], classifier: DependencyMap.Classifier) {
        let (selected, classifier, group) = try await load(view)
        let entries = selected.map { HostEntry(id: UUID(uuidString: $0.id)!, hostname: $0.hostname, tags: $0.tags) }
        let stores = stores
        let uploaded = try await RulesetsController.eachHost(entries) { entry in try await stores.flows.uploaded(host: entry.id) }
        let flows = Array(zip(selected, uploaded))
        let graph = DependencyMap.build(selected: flows.map { ($0.0, $0.1) }, classifier: classifier, since: view.since)
        return (MapBudget.fit(graph), selected.count, group, flows, classifier)
    }

    @Sendable func map(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let view = try View(Self.query(request), now: Int64(Date().timeIntervalSince1970))
        let (fitted, _, group, _, _) = try await graph(view)
        let placed = MapLayout.place(fitted.graph)
        return JSON.response(MapView(
            window: view.window, since: TimeText.rfc3339(view.since), groupBy: group, hosts: placed.hosts, flows: placed.flows,
            hiddenEdges: fitted.hiddenEdges, hiddenConnections: fitted.hiddenConnections,
            nodes: placed.nodes.map { MapView.Node(id: $0.id, kind: $0.kind.rawValue, label: $0.label, hosts: $0.hosts, connections: $0.connections,
                                                   members: $0.members, x: $0.x, y: $0.y) },
            edges: placed.edges.map { MapView.Edge(id: $0.key.id, from: $0.key.from, to: $0.key.to, service: $0.key.service, state: $0.key.state.rawValue,
                                                   connections: $0.connections, flows: $0.flows) }))
    }

    /// The flows behind one edge of the map the same view draws, busiest first, paged.
    @Sendable func flows(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let query = Self.query(request)
        let view = try View(query, now: Int64(Date().timeIntervalSince1970))
        guard let text = query["edge"], let edge = DependencyMap.EdgeKey(id: text) else {
            throw APIFailure(.badRequest, "expected an edge id from the map (from|to|service|state)", field: "edge")
        }
        guard let limit = query["limit"].map({ Int($0) }) ?? 100, (1...Self.largestPage).contains(limit) else {
            throw APIFailure(.badRequest, "expected 1-\(Self.largestPage)", field: "limit")
        }
        guard let offset = query["offset"].map({ Int($0) }) ?? 0, offset >= 0 else { throw APIFailure(.badRequest, "expected 0 or more", field: "offset") }
        let (fitted, _, _, flows, classifier) = try await graph(view)
        var renamed: [String: String] = [:]
        for node in fitted.graph.nodes { for member in node.members { renamed[member] = node.id } }
        var matching: [(host: DependencyMap.Host, flow: FleetFlow)] = []
        for (host, hostFlows) in flows {
            for flow in hostFlows where flow.stats.lastSeen >= view.since {
                guard var (key, _, _) = classifier.place(flow, of: host) else { continue }
                key.from = renamed[key.from] ?? key.from
                key.to = renamed[key.to] ?? key.to
                if key == edge { matching.append((host, flow)) }
            }
        }
        // Busiest first; ties by host, then peer and service: a total order, so pages never overlap.
        matching.sort {
            ($0.flow.stats.connections, $1.host.hostname, $1.host.id, $1.flow.key.remote, $1.flow.key.service, $1.flow.key.local)
                > ($1.flow.stats.connections, $0.host.hostname, $0.host.id, $0.flow.key.remote, $0.flow.key.service, $0.flow.key.local)
        }
        let page = matching.dropFirst(offset).prefix(limit).map { item in
            MapFlow(hostID: item.host.id, hostname: item.host.hostname,
                    flow: FlowRecord(key: item.flow.key, stats: item.flow.stats, remoteNames: item.flow.names))
        }
        return JSON.response(Page(items: Array(page), total: matching.count))
    }

    static func query(_ request: Request) -> [String: String] {
        var query: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { query[String(name)] = String(value) }
        return query
    }
}

extension StandardNetworks {
    /// The map's standard networks: the installed file (or the source tree's, in development),
    /// else none, and their flows are drawn by name or as Somewhere.
    static func server() -> Ruleset {
        (try? load()) ?? Ruleset(networks: [], incoming: [], outgoing: [])
    }
}
