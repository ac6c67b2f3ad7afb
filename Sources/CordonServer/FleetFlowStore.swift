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
    /// The agent's rows changed after `after` through `through` were stored: the host's flow
    /// head moves to `through` when the batch follows on from it (or none is known yet). After
    /// a restore the head is below what the agent sent from, and stays: the answer tells the
    /// agent to send the rest again. Returns the head.
    func acknowledge(host: UUID, after: Int64, through: Int64) async throws -> Int64?
    func flows(host: UUID) async throws -> [FlowRecord]
    /// The same rows typed, for a fleet's propose and review: no text kept per row.
    func uploaded(host: UUID) async throws -> [FleetFlow]
    /// The rejected flows of these hosts seen at or after `since` (RFC 3339): a rollout's wave
    /// looks for regressions among them.
    func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]]
    /// The dependency map of these hosts' flows seen at or after `since` (unix seconds), its
    /// nodes and edges in no set order (`Graph.sorted()`).
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
    /// `selected`: every host on the map, when `hosts` are only some of them (whose connections
    /// the client's report draws: `Classifier.countedByClient`).
    func placed(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host],
                classifier: DependencyMap.Classifier, since: Int64, selected: Set<String>? = nil) async throws -> [MapFlow] {
        var renamed: [String: String] = [:]
        for (node, ids) in members { for id in ids { renamed[id] = node } }
        let selected = selected ?? Set(hosts.map(\.id))
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
/// a total order, so pages never overlap.
enum MapFlowOrder {
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
    let cache = FlowMapCache()

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

    public func acknowledge(host: UUID, after: Int64, through: Int64) async throws -> Int64? {
        // Reports come every few seconds and most carry no new rows: the row is written only when
        // the head moves (an UPDATE that changes nothing still writes a row version).
        let rows = try await client.query("""
            WITH moved AS (
              UPDATE hosts SET flows_head = greatest(coalesce(flows_head, 0), \(through))
              WHERE id = \(host) AND (flows_head IS NULL OR (\(after) <= flows_head AND \(through) > flows_head))
              RETURNING flows_head)
            SELECT flows_head FROM moved
            UNION ALL SELECT flows_head FROM hosts WHERE id = \(host) AND NOT EXISTS (SELECT 1 FROM moved)
            """, logger: logger)
        for try await head in rows.decode(Int64?.self) { return head }
        return nil
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

    /// Reads what changed since the last read into this replica's memory (at start: every
    /// row); returns how many rows it read.
    public func refreshMap() async throws -> Int {
        try await cache.current(client: client, logger: logger).read
    }

    /// The flows of hosts with a policy waiting are classified one by one (what the waiting
    /// policy would reject is a rule's question); every other host's are summed from the rows
    /// kept in memory (`FlowMapCache`).
    public func graph(of hosts: [DependencyMap.Host], classifier: DependencyMap.Classifier, since: Int64) async throws -> DependencyMap.Graph {
        var builder = DependencyMap.Builder(classifier: classifier, selected: hosts)
        for host in hosts where host.pending != nil { builder.add(try await uploaded(host: UUID(uuidString: host.id)!), of: host, since: since) }
        let summed = hosts.filter { $0.pending == nil }
        guard !summed.isEmpty else { return builder.graph() }
        let rows = try await cache.current(client: client, logger: logger).state
        let peers = rows.fleetPeers(classifier, selected: builder.selected)
        // Per host its node, numbered: the sums are keyed by numbers, not texts.
        var owns = FlowMapCache.Strings()
        let own = summed.map { owns.intern(classifier.node(of: $0).id) }
        let totals = rows.totals(of: summed, own: own, peers: peers, since: since)
        builder.reserve(edges: totals.count)
        var externals: [Int32: DependencyMap.Node?] = [:]
        for total in totals {
            let node: DependencyMap.Node?
            let key = total.key
            if key.far < 0 {
                node = peers.nodes[Int(-1 - key.far)]
            } else {
                if externals[key.far] == nil { externals[key.far] = DependencyMap.ExternalPeers.node(id: rows.strings.values[Int(key.far)]) }
                node = externals[key.far]!
            }
            guard let node else { continue }
            builder.add(DependencyMap.EdgeKey(key.direction, own: owns.values[Int(key.own)], peer: node.id,
                                              service: rows.strings.values[Int(key.service)], state: key.state),
                        peer: node, connections: total.connections, flows: total.flows)
        }
        return builder.graph()
    }

    /// One page placed from the rows in memory, busiest first (`MapFlowOrder`), the page's
    /// records read from PostgreSQL; merged with the flows of hosts with a policy waiting,
    /// placed one by one.
    public func flows(on edge: DependencyMap.EdgeKey, members: [String: [String]], of hosts: [DependencyMap.Host],
                      classifier: DependencyMap.Classifier, since: Int64, offset: Int, limit: Int) async throws -> (items: [MapFlow], total: Int) {
        let waiting = try await placed(on: edge, members: members, of: hosts.filter { $0.pending != nil }, classifier: classifier, since: since,
                                       selected: Set(hosts.map(\.id)))
        let (from, to) = (Set([edge.from] + (members[edge.from] ?? [])), Set([edge.to] + (members[edge.to] ?? [])))
        // Only hosts drawn at an end of the edge have flows on it; every host's address stays joinable.
        let drawn = hosts.filter { $0.pending == nil }.map { (host: $0, node: classifier.node(of: $0).id) }
            .filter { from.contains($0.node) || to.contains($0.node) }
        let summed = drawn.map(\.host)
        var matching: [(connections: Int64, host: Int, key: String)] = []
        if !summed.isEmpty {
            let rows = try await cache.current(client: client, logger: logger).state
            let peers = rows.fleetPeers(classifier, selected: Set(hosts.map(\.id)))
            let ends = drawn.map { (from: from.contains($0.node), to: to.contains($0.node)) }
            let fleetEnds = peers.nodes.map { (from: from.contains($0.id), to: to.contains($0.id)) }
            var externalEnds: [Int32: (from: Bool, to: Bool)] = [:]
            for id in from.union(to) { if let interned = rows.strings.id(id) { externalEnds[interned] = (from.contains(id), to.contains(id)) } }
            if let service = rows.strings.id(edge.service) {
                rows.each(of: summed, peers: peers, since: since) { host, row, peer, keys, at in
                    guard row.service == service, DependencyMap.state(verdict: row.verdict, enforcing: summed[host].enforcing) == edge.state else { return }
                    let far: (from: Bool, to: Bool)
                    switch peer {
                    case .fleet(let node): far = fleetEnds[node]
                    case .external(let id): far = externalEnds[id] ?? (false, false)
                    }
                    let on = row.direction == .outbound ? ends[host].from && far.to : row.direction == .inbound && ends[host].to && far.from
                    if on { matching.append((row.connections, host, keys[at])) }
                }
            }
            // MapFlowOrder: busiest first, then host name, host id and flow key, compared as bytes.
            var rank = [Int](repeating: 0, count: summed.count)
            for (place, index) in summed.indices.sorted(by: {
                let (a, b) = (summed[$0], summed[$1])
                return a.hostname.utf8.elementsEqual(b.hostname.utf8) ? a.id < b.id : a.hostname.utf8.lexicographicallyPrecedes(b.hostname.utf8)
            }).enumerated() { rank[index] = place }
            matching.sort {
                if $0.connections != $1.connections { return $0.connections > $1.connections }
                if $0.host != $1.host { return rank[$0.host] < rank[$1.host] }
                return $0.key.utf8.lexicographicallyPrecedes($1.key.utf8)
            }
        }
        let (skip, take) = waiting.isEmpty ? (offset, limit) : (0, offset + limit)
        let chosen = matching.dropFirst(skip).prefix(take)
        var records: [String: FlowRecord] = [:]
        if !chosen.isEmpty {
            let ids = chosen.map { UUID(uuidString: summed[$0.host].id)! }, keys = chosen.map(\.key)
            for try await (id, key, line) in try await client.query("""
                SELECT host_id, flow_key, \(unescaped: FlowRow.line) FROM host_flows JOIN unnest(\(ids)::uuid[], \(keys)::text[]) AS p(host_id, flow_key)
                USING (host_id, flow_key)
                """, logger: logger).decode((UUID, String, String).self) {
                records[id.uuidString.lowercased() + " " + key] = FlowRow.record(line)
            }
        }
        let page = chosen.compactMap { match in
            records[summed[match.host].id + " " + match.key].map { MapFlow(hostID: summed[match.host].id, hostname: summed[match.host].hostname, flow: $0) }
        }
        guard !waiting.isEmpty else { return (page, matching.count) }
        return (Array((page + waiting).sorted(by: MapFlowOrder.before).dropFirst(offset).prefix(limit)), matching.count + waiting.count)
    }
}
