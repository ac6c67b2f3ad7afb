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
    /// The rejected flows of these hosts seen at or after `since` (RFC 3339): a rollout's wave
    /// looks for regressions among them.
    func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]]
}

public struct PostgresFleetFlowStore: FleetFlowStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    static func key(_ f: FlowRecord) -> String {
        func text<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "-" }
        return [f.direction.rawValue, f.protocol, f.localAddress, text(f.localPort), f.remoteAddress, text(f.remotePort),
                text(f.icmpType), text(f.icmpCode), f.verdict.rawValue].joined(separator: "|")
    }

    public func upsert(host: UUID, flows: [FlowRecord]) async throws {
        guard !flows.isEmpty else { return }
        // One row per key in a statement: ON CONFLICT cannot touch a row twice.
        var latest: [String: FlowRecord] = [:]
        for flow in flows {
            let key = Self.key(flow)
            if let seen = latest[key], (seen.lastSeen, seen.connections, seen.packets) > (flow.lastSeen, flow.connections, flow.packets) { continue }
            latest[key] = flow
        }
        let keys = Array(latest.keys)
        let rows = keys.map { latest[$0]! }
        try await client.query("""
            INSERT INTO host_flows (host_id, flow_key, record, last_seen, connections, packets, bytes)
            SELECT \(host), * FROM unnest(\(keys)::text[], \(rows.map { String(decoding: Wire.encode($0), as: UTF8.self) })::text[],
                                          \(rows.map(\.lastSeen))::text[], \(rows.map { Int64(clamping: $0.connections) })::bigint[],
                                          \(rows.map { Int64(clamping: $0.packets) })::bigint[], \(rows.map { Int64(clamping: $0.bytes) })::bigint[])
            ON CONFLICT (host_id, flow_key) DO UPDATE SET record = excluded.record, last_seen = excluded.last_seen,
              connections = excluded.connections, packets = excluded.packets, bytes = excluded.bytes
            WHERE (excluded.last_seen, excluded.connections, excluded.packets, excluded.bytes)
               >= (host_flows.last_seen, host_flows.connections, host_flows.packets, host_flows.bytes)
            """, logger: logger)
    }

    public func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] {
        guard !hosts.isEmpty else { return [:] }
        var result: [UUID: [FlowRecord]] = [:]
        for try await (id, text) in try await client.query("""
            SELECT host_id, record FROM host_flows
            WHERE host_id = ANY(\(hosts)::uuid[]) AND last_seen >= \(since) AND flow_key LIKE '%|rejected'
            """, logger: logger).decode((UUID, String).self) {
            if let record = try? Wire.decode(FlowRecord.self, from: Data(text.utf8)) { result[id, default: []].append(record) }
        }
        return result
    }

    public func flows(host: UUID) async throws -> [FlowRecord] {
        var result: [FlowRecord] = []
        for try await text in try await client.query("SELECT record FROM host_flows WHERE host_id = \(host) ORDER BY flow_key", logger: logger)
            .decode(String.self) {
            if let record = try? Wire.decode(FlowRecord.self, from: Data(text.utf8)) { result.append(record) }
        }
        return result
    }
}
