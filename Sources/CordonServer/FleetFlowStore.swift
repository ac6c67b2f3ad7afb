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
}

extension FleetFlowStore {
    public func uploaded(host: UUID) async throws -> [FleetFlow] { try await flows(host: host).compactMap(FleetFlow.init) }
}

public struct PostgresFleetFlowStore: FleetFlowStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
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
        try await client.query("""
            INSERT INTO host_flows (host_id, flow_key, first_seen, last_seen, connections, packets, bytes, remote_names)
            SELECT \(host), * FROM unnest(\(keys)::text[], \(rows.map(\.firstSeen))::text[], \(rows.map(\.lastSeen))::text[],
                                          \(rows.map { Int64(clamping: $0.connections) })::bigint[], \(rows.map { Int64(clamping: $0.packets) })::bigint[],
                                          \(rows.map { Int64(clamping: $0.bytes) })::bigint[], \(rows.map { FlowRow.names($0.remoteNames) })::text[])
            ON CONFLICT (host_id, flow_key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen,
              connections = excluded.connections, packets = excluded.packets, bytes = excluded.bytes, remote_names = excluded.remote_names
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
}
