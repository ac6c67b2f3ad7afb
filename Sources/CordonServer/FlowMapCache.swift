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
/// Rows are stamped by a trigger (`host_flows.changed_txid`) and read again where they changed
/// (`StampedCache`). Agents upload every few seconds, so a refresh reads what changed since the
/// last map, not every row a host has.
struct FlowMapCache: Sendable {
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

    /// What a run of rows shares: where their far end is drawn (unless a fleet host holds the
    /// address), the service, the direction and the verdict.
    struct Signature: Hashable, Sendable {
        var node: Int32
        var service: Int32
        var direction: Direction
        var verdict: FlowVerdict
    }

    /// Rows up to `end` (from the previous run's end) that share a signature, numbered in the
    /// snapshot (`Snapshot.signatures`), so that a map keys a run's sum by one number.
    struct Run: Sendable {
        var end: Int32
        var signature: Int32
    }

    /// One host's rows, their flow keys (which order an edge's flows), and where each key is.
    struct HostRows: Sendable {
        var rows: [Row] = []
        var keys: [String] = []
        var index: [String: Int] = [:]
        var runs: [Run] = []

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
        mutating func group(_ signatures: inout Interner<Signature>) {
            let order = rows.indices.sorted { a, b in
                let (x, y) = (rows[a], rows[b])
                return (x.node, x.service, x.direction.rawValue, x.verdict.rawValue) < (y.node, y.service, y.direction.rawValue, y.verdict.rawValue)
            }
            (rows, keys) = (order.map { rows[$0] }, order.map { keys[$0] })
            index = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
            runs = []
            for (at, row) in rows.enumerated() {
                let signature = signatures.intern(Signature(node: row.node, service: row.service, direction: row.direction, verdict: row.verdict))
                if runs.last?.signature == signature { runs[runs.count - 1].end += 1 } else { runs.append(Run(end: Int32(at + 1), signature: signature)) }
            }
        }
    }

    /// Values that many rows repeat (services, external nodes, peer addresses, signatures),
    /// each kept once and numbered.
    struct Interner<Value: Hashable & Sendable>: Sendable {
        private var ids: [Value: Int32] = [:]
        private(set) var values: [Value] = []

        mutating func intern(_ value: Value) -> Int32 {
            if let id = ids[value] { return id }
            let id = Int32(values.count)
            ids[value] = id
            values.append(value)
            return id
        }

        func id(_ value: Value) -> Int32? { ids[value] }
    }
    typealias Strings = Interner<String>

    /// What one request reads: the rows as they were when it asked, never changed under it.
    struct Snapshot: Sendable {
        var rows: [UUID: HostRows] = [:]
        var strings = Strings()
        var signatures = Interner<Signature>()
        /// The interned peer addresses, by address: a map finds its fleet's hosts among them.
        var addresses: [IPAddress: Int32] = [:]
        var count: Int { rows.values.reduce(0) { $0 + $1.rows.count } }
    }

    private let cache = StampedCache(Snapshot())

    /// One stored row as read: its map columns still texts.
    struct Change: Sendable {
        var host: UUID
        var key: String
        var lastSeen: String
        var connections: Int64
        var direction: String, verdict: String, service: String, address: String, node: String
    }

    /// The rows as the database has them now, and how many rows this refresh read.
    func current(client: PostgresClient, logger: Logger) async throws -> (state: Snapshot, read: Int) {
        try await cache.current(client: client, logger: logger, read: { horizon in
            var changes: [Change] = []
            for try await (id, key, lastSeen, connections, direction, verdict, service, address, node) in try await client.query("""
                SELECT host_id, flow_key, last_seen, connections, coalesce(direction, ''), coalesce(verdict, ''), coalesce(service, ''),
                       coalesce(peer_address, ''), coalesce(peer_node, '')
                FROM host_flows WHERE changed_txid >= \(horizon)::xid8
                """, logger: logger).decode((UUID, String, String, Int64, String, String, String, String, String).self) {
                changes.append(Change(host: id, key: key, lastSeen: lastSeen, connections: connections, direction: direction, verdict: verdict,
                                      service: service, address: address, node: node))
            }
            return changes
        }, apply: Self.apply)
    }

    static func apply(_ state: inout Snapshot, _ changes: [Change]) {
        var touched: Set<UUID> = []
        for change in changes {
            // Rows the map never draws are not kept: forwarded traffic, rows that did not read as flows.
            var row: Row?
            if !change.node.isEmpty, let seen = TimeText.unix(change.lastSeen), let direction = Direction(rawValue: change.direction),
               direction != .forward, let verdict = FlowVerdict(rawValue: change.verdict) {
                let known = state.strings.values.count
                let address = state.strings.intern(change.address)
                if address == known, let parsed = IPAddress(change.address) { state.addresses[parsed] = address }
                row = Row(lastSeen: seen, connections: change.connections, direction: direction, verdict: verdict,
                          service: state.strings.intern(change.service), address: address, node: state.strings.intern(change.node))
            }
            state.rows[change.host, default: HostRows()].put(row, key: change.key)
            touched.insert(change.host)
        }
        // Taken out while the hosts' rows change, so that the two are not accessed at once.
        var signatures = Interner<Signature>()
        swap(&signatures, &state.signatures)
        for id in touched { state.rows[id]!.group(&signatures) }
        swap(&signatures, &state.signatures)
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
        var peers = FleetPeers(byAddress: [Int32](repeating: 0, count: strings.values.count))
        var index: [String: Int] = [:]
        for (address, host) in classifier.owners {
            guard let id = addresses[address] else { continue }
            let node = classifier.node(of: host)
            let at = index[node.id] ?? { index[node.id] = peers.nodes.count; peers.nodes.append(node); return peers.nodes.count - 1 }()
            peers.byAddress[Int(id)] = Int32(at + 1) * (selected.contains(host.id) ? -1 : 1)
        }
        return peers
    }

    /// Where a row's far end is drawn; nil when the row is not drawn from this side: an allowed
    /// inbound connection from a host on the map, whose own report draws it
    /// (`Classifier.countedByClient`).
    @inline(__always)
    func peer(of row: FlowMapCache.Row, _ peers: FleetPeers) -> Peer? {
        let fleet = peers.byAddress[Int(row.address)]
        if fleet == 0 { return .external(row.node) }
        if fleet < 0, row.direction == .inbound, row.verdict == .allowed { return nil }
        return .fleet(Int(abs(fleet)) - 1)
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
                if let peer = peer(of: row, peers) { body(index, row, peer, kept.keys, at) }
            }
        }
    }

    /// One edge's totals before its nodes are named: `own` as numbered by the caller, `far` a
    /// fleet node (negative: -1 - its index in `FleetPeers.nodes`) or an interned external node.
    struct Total {
        struct Key: Hashable {
            var own: Int32, far: Int32, service: Int32
            var direction: Direction, state: DependencyMap.EdgeState
        }
        var key: Key
        var connections: UInt64 = 0, flows = 0
    }

    /// The totals of `hosts`' rows seen at or after `since`, as `each` places them, keyed by
    /// numbers. A run of rows whose far end no fleet host holds is summed first and then keyed
    /// by one number (the host's node, the run's signature, whether the host enforces): a map
    /// over 200,000 rows touches its table once a run, not once a row, and hashes one integer.
    func totals(of hosts: [DependencyMap.Host], own: [Int32], peers: FleetPeers, since: Int64) -> [Total] {
        var totals: [Total] = []
        var external: [UInt64: Int] = [:], fleet: [Total.Key: Int] = [:]
        /// Adds to the total filed under `id` in `table`, made from `key()` the first time.
        func add<ID: Hashable>(_ id: ID, in table: inout [ID: Int], _ key: () -> Total.Key, connections: UInt64, flows: Int) {
            let at = table[id] ?? { totals.append(Total(key: key())); table[id] = totals.count - 1; return totals.count - 1 }()
            totals[at].connections &+= connections
            totals[at].flows += flows
        }
        for (index, host) in hosts.enumerated() {
            guard let id = UUID(uuidString: host.id), let kept = rows[id] else { continue }
            let enforcing = host.enforcing
            var start = 0
            kept.rows.withUnsafeBufferPointer { rows in
                for run in kept.runs {
                    var connections: UInt64 = 0, flows = 0
                    for row in rows[start..<Int(run.end)] where row.lastSeen >= since {
                        switch peer(of: row, peers) {
                        case .external?:
                            connections &+= UInt64(max(0, row.connections))
                            flows += 1
                        case .fleet(let node)?:
                            let key = Total.Key(own: own[index], far: -1 - Int32(node), service: row.service, direction: row.direction,
                                                state: DependencyMap.state(verdict: row.verdict, enforcing: enforcing))
                            add(key, in: &fleet, { key }, connections: UInt64(max(0, row.connections)), flows: 1)
                        case nil:
                            continue
                        }
                    }
                    start = Int(run.end)
                    guard flows > 0 else { continue }
                    let packed = UInt64(UInt32(bitPattern: own[index])) << 33 | UInt64(UInt32(bitPattern: run.signature)) << 1 | (enforcing ? 1 : 0)
                    add(packed, in: &external, {
                        let signature = signatures.values[Int(run.signature)]
                        return Total.Key(own: own[index], far: signature.node, service: signature.service, direction: signature.direction,
                                         state: DependencyMap.state(verdict: signature.verdict, enforcing: enforcing))
                    }, connections: connections, flows: flows)
                }
            }
        }
        return totals
    }
}
