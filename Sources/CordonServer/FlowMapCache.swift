import CordonCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Every host's flow rows as the map reads them, kept in this replica's memory: numbers and
/// interned texts, no records. Summing 200,000 rows in PostgreSQL took 600 ms a request on this
/// machine however it was planned (scan, hash join, hash aggregate); the same sums over rows in
/// memory take a few milliseconds, so the map's work grows with the rows a view covers and not
/// with the database's.
///
/// The database stays the truth: an upload bumps its host's `flows_version` in the statement
/// that writes its rows, and every map request first reads the versions (one narrow row per
/// host) and reloads the hosts whose version moved. Versions are read before rows, so what is
/// kept is never older than the version it is filed under; a reload at most repeats work. Each
/// replica keeps its own copy, and a replica that just started reads every host once.
final class FlowMapCache: Sendable {
    /// One row: what the map groups by, and its flow key, which orders an edge's flows.
    struct Row: Sendable {
        var key: String
        var lastSeen: Int64
        var connections: Int64
        var direction: Direction
        var verdict: FlowVerdict
        /// Interned: the service, the peer's address ('' interned when none) and its node outside the fleet.
        var service: Int32
        var address: Int32
        var node: Int32
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
        var versions: [UUID: Int64] = [:]
        var rows: [UUID: [Row]] = [:]
        var strings = Strings()
    }

    private let state = Mutex(Snapshot())

    /// The rows as the database has them now: versions read, moved hosts reloaded.
    func current(client: PostgresClient, logger: Logger) async throws -> Snapshot {
        var versions: [UUID: Int64] = [:]
        for try await (id, version) in try await client.query("SELECT id, flows_version FROM hosts", logger: logger).decode((UUID, Int64).self) {
            versions[id] = version
        }
        let known = state.withLock { $0.versions }
        let moved = versions.compactMap { id, version in known[id] == version ? nil : id }
        typealias Raw = (key: String, lastSeen: Int64, connections: Int64, direction: Direction, verdict: FlowVerdict,
                         service: String, address: String, node: String)
        var loaded: [UUID: [Raw]] = [:]
        if !moved.isEmpty {
            // Rows the map never draws are not kept: forwarded traffic, and rows that did not read as flows.
            for try await (id, key, lastSeen, connections, direction, verdict, service, address, node) in try await client.query("""
                SELECT host_id, flow_key, last_seen, connections, direction, verdict, service, peer_address, peer_node FROM host_flows
                WHERE host_id = ANY(\(moved)::uuid[]) AND peer_node <> '' AND direction <> 'forward'
                """, logger: logger).decode((UUID, String, String, Int64, String, String, String, String, String).self) {
                guard let seen = TimeText.unix(lastSeen), let direction = Direction(rawValue: direction),
                      let verdict = FlowVerdict(rawValue: verdict) else { continue }
                loaded[id, default: []].append((key, seen, connections, direction, verdict, service, address, node))
            }
        }
        // Texts are interned under the lock: two requests loading at once must not give one id two meanings.
        return state.withLock { kept in
            // Another request may have loaded newer rows meanwhile: the newer of the two stays.
            for id in moved where kept.versions[id].map({ $0 < versions[id]! }) ?? true {
                kept.versions[id] = versions[id]
                kept.rows[id] = (loaded[id] ?? []).map { raw in
                    Row(key: raw.key, lastSeen: raw.lastSeen, connections: raw.connections, direction: raw.direction, verdict: raw.verdict,
                        service: kept.strings.intern(raw.service), address: kept.strings.intern(raw.address), node: kept.strings.intern(raw.node))
                }
            }
            for id in kept.versions.keys where versions[id] == nil {
                kept.versions[id] = nil
                kept.rows[id] = nil
            }
            return kept
        }
    }
}

extension FlowMapCache.Snapshot {
    /// Where a kept row's far end is drawn: a fleet host's node, or the node it was given at upload.
    enum Peer { case fleet(Int), external(Int32) }

    /// The fleet nodes that rows of this snapshot can land on, by interned address, and whether
    /// that address's host is on the map (`Classifier.countedByClient`).
    struct FleetPeers {
        var nodes: [DependencyMap.Node] = []
        var byAddress: [Int32: (node: Int, selected: Bool)] = [:]
    }

    func fleetPeers(_ classifier: DependencyMap.Classifier, selected: Set<String>) -> FleetPeers {
        var peers = FleetPeers()
        var index: [String: Int] = [:]
        for (address, host) in classifier.owners {
            guard let id = strings.id(address.description) else { continue }
            let node = classifier.node(of: host)
            let at = index[node.id] ?? { index[node.id] = peers.nodes.count; peers.nodes.append(node); return peers.nodes.count - 1 }()
            peers.byAddress[id] = (at, selected.contains(host.id))
        }
        return peers
    }

    /// Each row of `hosts` seen at or after `since` that the map draws, with where its far end
    /// lands: the same rows, placed the same, as `Classifier.place` flow by flow.
    func each(of hosts: [DependencyMap.Host], peers: FleetPeers, since: Int64,
              _ body: (_ host: Int, _ row: FlowMapCache.Row, _ peer: Peer) -> Void) {
        for (index, host) in hosts.enumerated() {
            guard let id = UUID(uuidString: host.id), let rows = rows[id] else { continue }
            for row in rows where row.lastSeen >= since {
                let fleet = peers.byAddress[row.address]
                if row.direction == .inbound, row.verdict == .allowed, fleet?.selected == true { continue }
                body(index, row, fleet.map { .fleet($0.node) } ?? .external(row.node))
            }
        }
    }
}
