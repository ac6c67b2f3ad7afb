import CordonCore
import Foundation
import Logging
import PostgresNIO

/// Every host's flow rows as the map reads them, kept in this replica's memory: numbers and
/// interned texts, no records. Summing 200,000 rows in PostgreSQL took 600 ms a request on this
/// machine however it was planned (scan, hash join, hash aggregate); the same sums over rows in
/// memory take milliseconds, so the map's work grows with the rows a view covers and not with
/// the database's.
///
/// The database stays the truth. A trigger stamps every written row with its transaction
/// (`host_flows.changed_txid`), whoever wrote it: this server's uploads, an older replica's
/// during an upgrade, a hand-made UPDATE. Each refresh reads the rows stamped at or after the
/// oldest transaction that was still running at the previous refresh, so a transaction that
/// committed late is read then; rows read twice are replaced by themselves. Agents upload every
/// few seconds, so a refresh reads what changed since the last map, not every row a host has.
/// Refreshes run one at a time, in order, each starting after the request that asked for it.
actor FlowMapCache {
    /// One row: what the map groups by. Plain numbers, copied without reference counting; its
    /// flow key is kept beside it (`HostRows.keys`).
    struct Row: Sendable {
        var lastSeen: Int64
        var connections: Int64
        var direction: Direction
        var verdict: FlowVerdict
        /// Interned: the service, the peer's address ('' when none) and its node outside the fleet.
        var service: Int32
        var address: Int32
        var node: Int32
    }

    /// One host's rows, their flow keys (which order an edge's flows), and where each key is.
    struct HostRows: Sendable {
        var rows: [Row] = []
        var keys: [String] = []
        var index: [String: Int] = [:]

        mutating func put(_ row: Row?, key: String) {
            if let at = index[key] {
                if let row { rows[at] = row; return }
                // Gone from the map (a row that no longer reads as one): the last row takes its place.
                let (last, lastKey) = (rows.removeLast(), keys.removeLast())
                index[key] = nil
                if at < rows.count { (rows[at], keys[at]) = (last, lastKey); index[lastKey] = at }
            } else if let row {
                index[key] = rows.count
                rows.append(row)
                keys.append(key)
            }
        }

        /// Rows landing on one edge side by side (by external node, service, direction,
        /// verdict), so that a map sums a run of them at once.
        mutating func group() {
            let order = rows.indices.sorted { a, b in
                let (x, y) = (rows[a], rows[b])
                return (x.node, x.service, x.direction.rawValue, x.verdict.rawValue) < (y.node, y.service, y.direction.rawValue, y.verdict.rawValue)
            }
            (rows, keys) = (order.map { rows[$0] }, order.map { keys[$0] })
            index = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        }
    }

    /// Texts that many rows repeat (services, external nodes, peer addresses), each kept once.
    struct Strings: Sendable {
        private var ids: [String: Int32] = [:]
        private(set) var texts: [String] = []

        mutating func intern(_ text: String) -> Int32 {
            if let id = ids[text] { return id }
            let id = Int32(texts.count)
            ids[text] = id
            texts.append(text)
            return id
        }

        func id(_ text: String) -> Int32? { ids[text] }
    }

    /// What one request reads: the rows as they were when it asked, never changed under it.
    struct Snapshot: Sendable {
        var rows: [UUID: HostRows] = [:]
        var strings = Strings()
        var count: Int { rows.values.reduce(0) { $0 + $1.rows.count } }
    }

    private var state = Snapshot()
    /// The oldest transaction running at the last refresh: rows stamped from it on are read again.
    private var horizon = "0"
    private var tail: Task<Void, Never>?

    /// The rows as the database has them now, and how many rows this refresh read.
    func current(client: PostgresClient, logger: Logger) async throws -> (snapshot: Snapshot, read: Int) {
        let previous = tail
        let refresh = Task { () async throws -> Int in
            await previous?.value
            return try await self.refresh(client: client, logger: logger)
        }
        tail = Task { _ = try? await refresh.value }
        let read = try await refresh.value
        return (state, read)
    }

    private func refresh(client: PostgresClient, logger: Logger) async throws -> Int {
        // The horizon first: whatever committed before it is visible to the read that follows.
        var next = horizon
        for try await xmin in try await client.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", logger: logger).decode(String.self) {
            next = xmin
        }
        var read = 0
        var touched: Set<UUID> = []
        for try await (id, key, lastSeen, connections, direction, verdict, service, address, node) in try await client.query("""
            SELECT host_id, flow_key, last_seen, connections, coalesce(direction, ''), coalesce(verdict, ''), coalesce(service, ''),
                   coalesce(peer_address, ''), coalesce(peer_node, '')
            FROM host_flows WHERE changed_txid >= \(horizon)::xid8
            """, logger: logger).decode((UUID, String, String, Int64, String, String, String, String, String).self) {
            read += 1
            // Rows the map never draws are not kept: forwarded traffic, rows that did not read as flows.
            var row: Row?
            if !node.isEmpty, let seen = TimeText.unix(lastSeen), let direction = Direction(rawValue: direction), direction != .forward,
               let verdict = FlowVerdict(rawValue: verdict) {
                row = Row(lastSeen: seen, connections: connections, direction: direction, verdict: verdict,
                          service: state.strings.intern(service), address: state.strings.intern(address), node: state.strings.intern(node))
            }
            state.rows[id, default: HostRows()].put(row, key: key)
            touched.insert(id)
        }
        for id in touched { state.rows[id]!.group() }
        horizon = next
        return read
    }
}

extension FlowMapCache.Snapshot {
    /// Where a kept row's far end is drawn: a fleet host's node, or the node it was given at upload.
    enum Peer { case fleet(Int), external(Int32) }

    /// The fleet nodes that rows of this snapshot can land on, by interned address, and whether
    /// that address's host is on the map (`Classifier.countedByClient`).
    struct FleetPeers {
        var nodes: [DependencyMap.Node] = []
        /// By interned text: the fleet node's index plus one, negative when its host is on the
        /// map; 0 for texts no fleet host holds. An array, not a dictionary: it is read once a row.
        var byAddress: [Int32] = []
    }

    func fleetPeers(_ classifier: DependencyMap.Classifier, selected: Set<String>) -> FleetPeers {
        var peers = FleetPeers(byAddress: [Int32](repeating: 0, count: strings.texts.count))
        var index: [String: Int] = [:]
        for (address, host) in classifier.owners {
            guard let id = strings.id(address.description) else { continue }
            let node = classifier.node(of: host)
            let at = index[node.id] ?? { index[node.id] = peers.nodes.count; peers.nodes.append(node); return peers.nodes.count - 1 }()
            peers.byAddress[Int(id)] = Int32(at + 1) * (selected.contains(host.id) ? -1 : 1)
        }
        return peers
    }

    /// Each row of `hosts` seen at or after `since` that the map draws, with where its far end
    /// lands: the same rows, placed the same, as `Classifier.place` flow by flow.
    /// `body` gets the host's index in `hosts`, the row, where it lands, and the host's flow keys
    /// with the row's place among them.
    func each(of hosts: [DependencyMap.Host], peers: FleetPeers, since: Int64,
              _ body: (_ host: Int, _ row: FlowMapCache.Row, _ peer: Peer, _ keys: [String], _ at: Int) -> Void) {
        for (index, host) in hosts.enumerated() {
            guard let id = UUID(uuidString: host.id), let kept = rows[id] else { continue }
            for (at, row) in kept.rows.enumerated() where row.lastSeen >= since {
                let fleet = peers.byAddress[Int(row.address)]
                if fleet == 0 { body(index, row, .external(row.node), kept.keys, at); continue }
                if fleet < 0, row.direction == .inbound, row.verdict == .allowed { continue }
                body(index, row, .fleet(Int(abs(fleet)) - 1), kept.keys, at)
            }
        }
    }
}
