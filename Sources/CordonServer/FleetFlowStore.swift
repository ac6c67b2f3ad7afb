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
            INSERT INTO host_flows (host_id, flow_key, first_seen, last_seen, connections, packets, bytes, remote_names)
            SELECT \(host), * FROM unnest(\(keys)::text[], \(rows.map(\.firstSeen))::text[], \(rows.map(\.lastSeen))::text[],
                                          \(rows.map { Int64(clamping: $0.connections) })::bigint[], \(rows.map { Int64(clamping: $0.packets) })::bigint[],
                                          \(rows.map { Int64(clamping: $0.bytes) })::bigint[], \(rows.map { Self.names($0.remoteNames) })::text[])
            ON CONFLICT (host_id, flow_key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen,
              connections = excluded.connections, packets = excluded.packets, bytes = excluded.bytes, remote_names = excluded.remote_names
            WHERE (excluded.last_seen, excluded.connections, excluded.packets, excluded.bytes)
               >= (host_flows.last_seen, host_flows.connections, host_flows.packets, host_flows.bytes)
            """, logger: logger)
    }

    /// The names space-separated ('' for none, most rows): each is a DNS name (checked at upload).
    static func names(_ names: [String]) -> String { names.joined(separator: " ") }
    static func names(_ text: String) -> [String] { text.isEmpty ? [] : text.utf8.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) } }

    static let columns = "flow_key, first_seen, last_seen, connections, packets, bytes, remote_names"

    /// The key's nine fields (split by byte: the `Character` split was a fifth of a propose's
    /// time), with its direction and verdict read.
    static func fields(_ key: String) -> (parts: [String], direction: Direction, verdict: FlowVerdict)? {
        let parts = key.utf8.split(separator: UInt8(ascii: "|"), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 9, let direction = Direction(rawValue: parts[0]), let verdict = FlowVerdict(rawValue: parts[8]) else { return nil }
        return (parts, direction, verdict)
    }

    /// A row back into the record it was stored from; nil for a key this server did not write.
    static func record(_ row: (String, String, String, Int64, Int64, Int64, String)) -> FlowRecord? {
        let (key, first, last, connections, packets, bytes, names) = row
        guard let (parts, direction, verdict) = Self.fields(key) else { return nil }
        func number<T: FixedWidthInteger>(_ part: String) -> T? { part == "-" ? nil : T(part) }
        let local = parts[2]
        return FlowRecord(direction: direction, protocol: parts[1], family: local.utf8.contains(UInt8(ascii: ":")) ? .ipv6 : .ipv4, localAddress: local,
                          localPort: number(parts[3]), remoteAddress: parts[4], remotePort: number(parts[5]), icmpType: number(parts[6]),
                          icmpCode: number(parts[7]), connections: UInt64(clamping: connections), packets: UInt64(clamping: packets),
                          bytes: UInt64(clamping: bytes), firstSeen: first, lastSeen: last, verdict: verdict,
                          remoteNames: Self.names(names))
    }

    public func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] {
        guard !hosts.isEmpty else { return [:] }
        var result: [UUID: [FlowRecord]] = [:]
        for try await row in try await client.query("""
            SELECT host_id, \(unescaped: Self.columns) FROM host_flows
            WHERE host_id = ANY(\(hosts)::uuid[]) AND last_seen >= \(since) AND flow_key LIKE '%|rejected'
            """, logger: logger).decode((UUID, String, String, String, Int64, Int64, Int64, String).self) {
            if let record = Self.record((row.1, row.2, row.3, row.4, row.5, row.6, row.7)) { result[row.0, default: []].append(record) }
        }
        return result
    }

    /// Straight from the key's fields to a typed flow: no record, and so no text, in between.
    static func uploaded(_ row: (String, String, String, Int64, Int64, Int64, String)) -> FleetFlow? {
        let (key, first, last, connections, packets, bytes, names) = row
        guard let (parts, direction, verdict) = Self.fields(key) else { return nil }
        func number<T: FixedWidthInteger>(_ part: String) -> T? { part == "-" ? nil : T(part) }
        return FleetFlow(direction: direction, protocol: parts[1], localAddress: parts[2], localPort: number(parts[3]),
                         remoteAddress: parts[4], remotePort: number(parts[5]), icmpType: number(parts[6]), icmpCode: number(parts[7]),
                         verdict: verdict, connections: UInt64(clamping: connections), packets: UInt64(clamping: packets), bytes: UInt64(clamping: bytes),
                         firstSeen: first, lastSeen: last, names: Self.names(names))
    }

    public func uploaded(host: UUID) async throws -> [FleetFlow] {
        var result: [FleetFlow] = []
        for try await row in try await client.query("SELECT \(unescaped: Self.columns) FROM host_flows WHERE host_id = \(host) ORDER BY flow_key",
                                                    logger: logger).decode((String, String, String, Int64, Int64, Int64, String).self) {
            if let flow = Self.uploaded(row) { result.append(flow) }
        }
        return result
    }

    public func flows(host: UUID) async throws -> [FlowRecord] {
        var result: [FlowRecord] = []
        for try await row in try await client.query("SELECT \(unescaped: Self.columns) FROM host_flows WHERE host_id = \(host) ORDER BY flow_key",
                                                    logger: logger).decode((String, String, String, Int64, Int64, Int64, String).self) {
            if let record = Self.record(row) { result.append(record) }
        }
        return result
    }
}
