import CordonCore
import CordonWire
import Foundation
import Logging
import PostgresNIO

/// Every host's flow aggregates. An upload carries the rows that changed, each with its totals:
/// a row replaces the stored one only if it is not older, so a replayed or reordered upload
/// changes nothing.
public protocol FleetFlowStore: Sendable {
    func upsert(host: UUID, flows: [FlowRecord]) async throws
    func flows(host: UUID) async throws -> [FlowRecord]
    /// The same rows typed, for a fleet's propose and review: no text kept per row.
    func uploaded(host: UUID) async throws -> [FleetFlow]
    /// The rejected flows of these hosts seen at or after `since` (RFC 3339): a rollout's wave
    /// looks for regressions among them.
    func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]]
    /// The dependency map of these hosts' flows seen at or after `since` (unix seconds).
    func graph(of hosts: [DependencyMap.Host], classifier: DependencyMap.Classifier, since: Int64) async throws -> DependencyMap.Graph
    /// The flows behind `edge` of that graph, busiest first, one page, and how many there are.
    /// `members`: what each folded node stands for.
    func flows(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host], classifier: DependencyMap.Classifier,
               since: Int64, offset: Int, limit: Int) async throws -> (items: [MapFlow], total: Int)
}

extension FleetFlowStore {
    public func uploaded(host: UUID) async throws -> [FleetFlow] { try await flows(host: host).compactMap(FleetFlow.init) }

    /// Every flow classified one by one: what the database's sums must equal.
    public func graph(of hosts: [DependencyMap.Host], classifier: DependencyMap.Classifier, since: Int64) async throws -> DependencyMap.Graph {
        var builder = DependencyMap.Builder(classifier: classifier, selected: hosts)
        for host in hosts { builder.add(try await uploaded(host: UUID(uuidString: host.id)!), of: host, since: since) }
        return builder.graph()
    }

    public func flows(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host],
                      classifier: DependencyMap.Classifier, since: Int64, offset: Int, limit: Int) async throws -> (items: [MapFlow], total: Int) {
        let matching = try await placed(on: edge, members: members, of: hosts, classifier: classifier, since: since)
        return (Array(matching.dropFirst(offset).prefix(limit)), matching.count)
    }

    /// The flows of `hosts` that land on `edge`, each placed by the classifier, in `MapFlowOrder`.
    func placed(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host],
                classifier: DependencyMap.Classifier, since: Int64) async throws -> [MapFlow] {
        var renamed: [String: String] = [:]
        for (node, ids) in members { for id in ids { renamed[id] = node } }
        let selected = Set(hosts.map(\.id))
        var matching: [MapFlow] = []
        for host in hosts {
            for record in try await flows(host: UUID(uuidString: host.id)!) {
                guard let flow = FleetFlow(record), flow.stats.lastSeen >= since, !classifier.countedByClient(flow.key, selected: selected),
                      var (key, _, _) = classifier.place(flow, of: host) else { continue }
                key.from = renamed[key.from] ?? key.from
                key.to = renamed[key.to] ?? key.to
                if key == edge { matching.append(MapFlow(hostID: host.id, hostname: host.hostname, flow: record)) }
            }
        }
        return matching.sorted(by: MapFlowOrder.before)
    }
}

/// An edge's flows: busiest first, then by host name, host and the row's key, compared as bytes:
/// a total order, the same in PostgreSQL (`COLLATE "C"`) and here, so pages never overlap.
enum MapFlowOrder {
    static let sql = #"f.connections DESC, own.hostname COLLATE "C", f.host_id, f.flow_key COLLATE "C""#

    static func before(_ a: MapFlow, _ b: MapFlow) -> Bool {
        if a.flow.connections != b.flow.connections { return a.flow.connections > b.flow.connections }
        let (x, y) = ((Array(a.hostname.utf8), a.hostID, Array(FlowRow.key(a.flow).utf8)), (Array(b.hostname.utf8), b.hostID, Array(FlowRow.key(b.flow).utf8)))
        if x.0 != y.0 { return x.0.lexicographicallyPrecedes(y.0) }
        if x.1 != y.1 { return x.1 < y.1 }
        return x.2.lexicographicallyPrecedes(y.2)
    }
}

public struct PostgresFleetFlowStore: FleetFlowStore {
    let client: PostgresClient
    let logger: Logger
    let external: DependencyMap.ExternalPeers

    public init(client: PostgresClient, logger: Logger, external: DependencyMap.ExternalPeers = .server) {
        self.client = client
        self.logger = logger
        self.external = external
    }

    public func upsert(host: UUID, flows: [FlowRecord]) async throws {
        guard !flows.isEmpty else { return }
        // One row per key in a statement: ON CONFLICT cannot touch a row twice.
        var latest: [String: FlowRecord] = [:]
        for flow in flows {
            let key = FlowRow.key(flow)
            if let seen = latest[key], (seen.lastSeen, seen.connections, seen.packets) > (flow.lastSeen, flow.connections, flow.packets) { continue }
            latest[key] = flow
        }
        let keys = Array(latest.keys)
        let rows = keys.map { latest[$0]! }
        let map = rows.map { MapColumns($0, external: external) }
        try await client.query("""
            INSERT INTO host_flows (host_id, flow_key, first_seen, last_seen, connections, packets, bytes, remote_names,
                                    direction, verdict, service, peer_address, peer_node)
            SELECT \(host), * FROM unnest(\(keys)::text[], \(rows.map(\.firstSeen))::text[], \(rows.map(\.lastSeen))::text[],
                                          \(rows.map { Int64(clamping: $0.connections) })::bigint[], \(rows.map { Int64(clamping: $0.packets) })::bigint[],
                                          \(rows.map { Int64(clamping: $0.bytes) })::bigint[], \(rows.map { FlowRow.names($0.remoteNames) })::text[],
                                          \(map.map(\.direction))::text[], \(map.map(\.verdict))::text[], \(map.map(\.service))::text[],
                                          \(map.map(\.peerAddress))::text[], \(map.map(\.peerNode))::text[])
            ON CONFLICT (host_id, flow_key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen,
              connections = excluded.connections, packets = excluded.packets, bytes = excluded.bytes, remote_names = excluded.remote_names,
              direction = excluded.direction, verdict = excluded.verdict, service = excluded.service, peer_address = excluded.peer_address,
              peer_node = excluded.peer_node
            WHERE (excluded.last_seen, excluded.connections, excluded.packets, excluded.bytes)
               >= (host_flows.last_seen, host_flows.connections, host_flows.packets, host_flows.bytes)
            """, logger: logger)
    }

    public func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] {
        guard !hosts.isEmpty else { return [:] }
        var result: [UUID: [FlowRecord]] = [:]
        for try await (id, line) in try await client.query("""
            SELECT host_id, \(unescaped: FlowRow.line) FROM host_flows
            WHERE host_id = ANY(\(hosts)::uuid[]) AND last_seen >= \(since) AND flow_key LIKE '%|rejected'
            """, logger: logger).decode((UUID, String).self) {
            if let record = FlowRow.record(line) { result[id, default: []].append(record) }
        }
        return result
    }

    /// The host's rows as one text (`UploadedFlows`), in no particular order: propose and review
    /// merge and rank what they read, and sorting each host's rows was a third of PostgreSQL's
    /// work for a tier. No rows aggregate to NULL: no flows.
    public func uploaded(host: UUID) async throws -> [FleetFlow] {
        let rows = try await client.query("SELECT string_agg(\(unescaped: FlowRow.line), E'\\n') FROM host_flows WHERE host_id = \(host)",
                                          logger: logger)
        var flows: [FleetFlow] = []
        for try await joined in rows.decode(UploadedFlows?.self) { flows += joined?.flows ?? [] }
        return flows
    }

    public func flows(host: UUID) async throws -> [FlowRecord] {
        var result: [FlowRecord] = []
        for try await line in try await client.query("SELECT \(unescaped: FlowRow.line) FROM host_flows WHERE host_id = \(host) ORDER BY flow_key",
                                                     logger: logger).decode(String.self) {
            if let record = FlowRow.record(line) { result.append(record) }
        }
        return result
    }

    /// The map's columns of a row: where its far end lands without the fleet (`peer_node`), the
    /// address a fleet host may hold (`peer_address`, single addresses only, else empty), and the
    /// direction, verdict and service it is drawn by. A row that does not read as a flow gets an
    /// empty `peer_node`, and the map leaves it out.
    struct MapColumns {
        var direction = "", verdict = "", service = "", peerAddress = "", peerNode = ""

        init() {}

        init(_ record: FlowRecord, external: DependencyMap.ExternalPeers) {
            guard let flow = FleetFlow(record) else { return }
            direction = flow.key.direction.rawValue
            verdict = flow.key.verdict.rawValue
            service = DependencyMap.Classifier.service(flow.key)
            peerAddress = flow.key.remote.isHost ? flow.key.remote.address.description : ""
            peerNode = external.node(flow.key, names: flow.names).id
        }
    }

    /// Rows stored before the map's columns (migration 009) get them, 10,000 at a time; returns
    /// how many. Run once the migrations are applied, before the server serves.
    public func classifyUnclassified() async throws -> Int {
        var total = 0
        while true {
            var hosts: [UUID] = [], keys: [String] = [], records: [FlowRecord?] = []
            for try await (host, key, line) in try await client.query("""
                SELECT host_id, flow_key, \(unescaped: FlowRow.line) FROM host_flows WHERE peer_node IS NULL LIMIT 10000
                """, logger: logger).decode((UUID, String, String).self) {
                hosts.append(host)
                keys.append(key)
                records.append(FlowRow.record(line))
            }
            guard !keys.isEmpty else { return total }
            let columns = records.map { $0.map { MapColumns($0, external: external) } ?? MapColumns() }
            try await client.query("""
                UPDATE host_flows SET direction = c.direction, verdict = c.verdict, service = c.service, peer_address = c.peer_address, peer_node = c.peer_node
                FROM unnest(\(hosts)::uuid[], \(keys)::text[], \(columns.map(\.direction))::text[], \(columns.map(\.verdict))::text[],
                            \(columns.map(\.service))::text[], \(columns.map(\.peerAddress))::text[], \(columns.map(\.peerNode))::text[])
                  AS c(host_id, flow_key, direction, verdict, service, peer_address, peer_node)
                WHERE host_flows.host_id = c.host_id AND host_flows.flow_key = c.flow_key
                """, logger: logger)
            total += keys.count
        }
    }

    /// The hosts as the map's queries join them: each host's node, and each fleet address's.
    /// `peer.selected`: the address's host is on the map, so its connections are drawn from the
    /// client's report (`Classifier.countedByClient`; the SQL says the same in its WHERE).
    private struct Joined {
        var ids: [UUID] = [], nodes: [String] = [], enforcing: [Bool] = [], hostnames: [String] = []
        var addresses: [String] = [], peerNodes: [String] = [], peerSelected: [Bool] = []
        var fleetNodes: [String: DependencyMap.Node] = [:]

        init(_ hosts: [DependencyMap.Host], selected: Set<String>, classifier: DependencyMap.Classifier) {
            for host in hosts {
                ids.append(UUID(uuidString: host.id)!)
                nodes.append(classifier.node(of: host).id)
                enforcing.append(host.enforcing)
                hostnames.append(host.hostname)
            }
            for (address, host) in classifier.owners {
                let node = classifier.node(of: host)
                fleetNodes[node.id] = node
                addresses.append(address.description)
                peerNodes.append(node.id)
                peerSelected.append(selected.contains(host.id))
            }
        }
    }

    /// Runs a map query with room to hash: 200,000 rows joined and summed spilled to disk at the
    /// default 4 MB, and the planner's merge joins sorted them by text (1 s against 0.6 s for
    /// hash joins, measured at 2,000 hosts).
    private func summing<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SET LOCAL work_mem = '64MB'", logger: logger)
            try await connection.query("SET LOCAL enable_mergejoin = off", logger: logger)
            return try await body(connection)
        }
    }

    /// The flows of hosts with a policy waiting are classified one by one (what the waiting
    /// policy would reject is a rule's question); every other host's are summed by PostgreSQL.
    public func graph(of hosts: [DependencyMap.Host], classifier: DependencyMap.Classifier, since: Int64) async throws -> DependencyMap.Graph {
        var builder = DependencyMap.Builder(classifier: classifier, selected: hosts)
        for host in hosts where host.pending != nil { builder.add(try await uploaded(host: UUID(uuidString: host.id)!), of: host, since: since) }
        let joined = Joined(hosts.filter { $0.pending == nil }, selected: builder.selected, classifier: classifier)
        guard !joined.ids.isEmpty else { return builder.graph() }
        let sums = try await summing { connection in
            var sums: [(String, String, String, String, String, Bool, Int64, Int64)] = []
            for try await row in try await connection.query("""
            WITH own AS (SELECT * FROM unnest(\(joined.ids)::uuid[], \(joined.nodes)::text[], \(joined.enforcing)::bool[]) AS o(host_id, node, enforcing)),
                 peer AS (SELECT * FROM unnest(\(joined.addresses)::text[], \(joined.peerNodes)::text[], \(joined.peerSelected)::bool[])
                          AS p(address, node, selected))
            SELECT own.node, coalesce(peer.node, f.peer_node), f.direction, f.service, f.verdict, own.enforcing,
                   sum(f.connections)::bigint, count(*)::bigint
            FROM host_flows f JOIN own ON own.host_id = f.host_id LEFT JOIN peer ON peer.address = f.peer_address
            WHERE f.last_seen >= \(TimeText.rfc3339(since)) AND f.direction <> 'forward' AND f.peer_node <> ''
              AND NOT (f.direction = 'inbound' AND f.verdict = 'allowed' AND peer.selected IS TRUE)
            GROUP BY 1, 2, 3, 4, 5, 6
            """, logger: logger).decode((String, String, String, String, String, Bool, Int64, Int64).self) { sums.append(row) }
            return sums
        }
        for (own, peer, direction, service, verdict, enforcing, connections, flows) in sums {
            guard let direction = Direction(rawValue: direction), let verdict = FlowVerdict(rawValue: verdict),
                  let node = joined.fleetNodes[peer] ?? DependencyMap.ExternalPeers.node(id: peer) else { continue }
            let key = DependencyMap.EdgeKey(direction, own: own, peer: peer, service: service,
                                            state: DependencyMap.state(verdict: verdict, enforcing: enforcing))
            builder.add(key, peer: node, connections: UInt64(max(0, connections)), flows: Int(flows))
        }
        return builder.graph()
    }

    /// One page from PostgreSQL in `MapFlowOrder`, merged with the flows of hosts with a policy
    /// waiting, placed one by one.
    public func flows(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host],
                      classifier: DependencyMap.Classifier, since: Int64, offset: Int, limit: Int) async throws -> (items: [MapFlow], total: Int) {
        let waiting = try await placed(on: edge, members: members, of: hosts.filter { $0.pending != nil }, classifier: classifier, since: since)
        let (from, to) = ([edge.from] + (members[edge.from] ?? []), [edge.to] + (members[edge.to] ?? []))
        let ends = Set(from + to)
        // Only hosts drawn at an end of the edge have flows on it; every host's address stays joinable.
        let joined = Joined(hosts.filter { $0.pending == nil && ends.contains(classifier.node(of: $0).id) }, selected: Set(hosts.map(\.id)),
                            classifier: classifier)
        // The (verdict, enforcing) pairs that give the edge's state; none for amber, which only waiting hosts have.
        let pairs = FlowVerdict.allCases.flatMap { verdict in [false, true].map { (verdict, $0) } }
            .filter { DependencyMap.state(verdict: $0.0, enforcing: $0.1) == edge.state }
        let (skip, take) = waiting.isEmpty ? (offset, limit) : (0, offset + limit)
        var page: [MapFlow] = [], total = 0
        if !joined.ids.isEmpty, !pairs.isEmpty {
            let rows = try await summing { connection in
                var rows: [(UUID, String, String, Int64)] = []
                for try await row in try await connection.query("""
                WITH own AS (SELECT * FROM unnest(\(joined.ids)::uuid[], \(joined.nodes)::text[], \(joined.enforcing)::bool[], \(joined.hostnames)::text[])
                             AS o(host_id, node, enforcing, hostname)),
                     peer AS (SELECT * FROM unnest(\(joined.addresses)::text[], \(joined.peerNodes)::text[], \(joined.peerSelected)::bool[])
                              AS p(address, node, selected)),
                     state AS (SELECT * FROM unnest(\(pairs.map(\.0.rawValue))::text[], \(pairs.map(\.1))::bool[]) AS s(verdict, enforcing))
                SELECT f.host_id, own.hostname, \(unescaped: FlowRow.line), count(*) OVER ()
                FROM host_flows f JOIN own ON own.host_id = f.host_id LEFT JOIN peer ON peer.address = f.peer_address
                WHERE f.last_seen >= \(TimeText.rfc3339(since)) AND f.direction <> 'forward' AND f.peer_node <> '' AND f.service = \(edge.service)
                  AND NOT (f.direction = 'inbound' AND f.verdict = 'allowed' AND peer.selected IS TRUE)
                  AND ((f.direction = 'outbound' AND own.node = ANY(\(from)::text[]) AND coalesce(peer.node, f.peer_node) = ANY(\(to)::text[]))
                    OR (f.direction = 'inbound' AND own.node = ANY(\(to)::text[]) AND coalesce(peer.node, f.peer_node) = ANY(\(from)::text[])))
                  AND (f.verdict, own.enforcing) IN (SELECT verdict, enforcing FROM state)
                ORDER BY \(unescaped: MapFlowOrder.sql) OFFSET \(skip) LIMIT \(take)
                """, logger: logger).decode((UUID, String, String, Int64).self) { rows.append(row) }
                return rows
            }
            for (id, hostname, line, count) in rows {
                total = Int(count)
                if let record = FlowRow.record(line) { page.append(MapFlow(hostID: id.uuidString.lowercased(), hostname: hostname, flow: record)) }
            }
            // Past the last page no row carries the count: count them.
            if page.isEmpty, skip > 0 {
                return ([], try await flows(on: edge, members: members, of: hosts, classifier: classifier, since: since, offset: 0, limit: 1).total)
            }
        }
        guard !waiting.isEmpty else { return (page, total) }
        return (Array((page + waiting).sorted(by: MapFlowOrder.before).dropFirst(offset).prefix(limit)), total + waiting.count)
    }
}
