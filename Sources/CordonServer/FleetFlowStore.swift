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

    /// A row as one text, the key's nine fields then the first and last sighting, the three
    /// totals and the names, '|' between: one column to decode a row, not seven (decoding each
    /// column took a generic lookup; a fleet propose reads 2M rows).
    static let line = "flow_key || '|' || first_seen || '|' || last_seen || '|' || connections || '|' || packets || '|' || bytes || '|' || remote_names"

    /// A line's fifteen fields, split by byte (a `Character` split was a fifth of a propose's
    /// time), sharing the line's storage.
    static func fields(_ line: String) -> [Substring]? {
        let fields = line.utf8.split(separator: UInt8(ascii: "|"), omittingEmptySubsequences: false).map { Substring($0) }
        return fields.count == 15 ? fields : nil
    }

    private static func number<T: FixedWidthInteger>(_ field: Substring) -> T? { field == "-" ? nil : T(field) }

    /// A row back into the record it was stored from; nil for a row this server did not write.
    static func record(_ line: String) -> FlowRecord? {
        guard let f = fields(line), let direction = Direction(rawValue: String(f[0])), let verdict = FlowVerdict(rawValue: String(f[8])),
              let connections = UInt64(f[11]), let packets = UInt64(f[12]), let bytes = UInt64(f[13]) else { return nil }
        return FlowRecord(direction: direction, protocol: String(f[1]), family: f[2].utf8.contains(UInt8(ascii: ":")) ? .ipv6 : .ipv4,
                          localAddress: String(f[2]), localPort: number(f[3]), remoteAddress: String(f[4]), remotePort: number(f[5]),
                          icmpType: number(f[6]), icmpCode: number(f[7]), connections: connections, packets: packets, bytes: bytes,
                          firstSeen: String(f[9]), lastSeen: String(f[10]), verdict: verdict, remoteNames: Self.names(String(f[14])))
    }

    /// Straight from the line's fields to a typed flow: no record, and so no text, in between.
    static func uploaded(_ line: String) -> FleetFlow? {
        guard let f = fields(line), let direction = Direction(rawValue: String(f[0])), let verdict = FlowVerdict(rawValue: String(f[8])),
              let connections = UInt64(f[11]), let packets = UInt64(f[12]), let bytes = UInt64(f[13]) else { return nil }
        return FleetFlow(direction: direction, protocol: f[1], localAddress: f[2], localPort: number(f[3]), remoteAddress: f[4], remotePort: number(f[5]),
                         icmpType: number(f[6]), icmpCode: number(f[7]), verdict: verdict, connections: connections, packets: packets, bytes: bytes,
                         firstSeen: f[9], lastSeen: f[10], names: Self.names(String(f[14])))
    }

    public func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] {
        guard !hosts.isEmpty else { return [:] }
        var result: [UUID: [FlowRecord]] = [:]
        for try await (id, line) in try await client.query("""
            SELECT host_id, \(unescaped: Self.line) FROM host_flows
            WHERE host_id = ANY(\(hosts)::uuid[]) AND last_seen >= \(since) AND flow_key LIKE '%|rejected'
            """, logger: logger).decode((UUID, String).self) {
            if let record = Self.record(line) { result[id, default: []].append(record) }
        }
        return result
    }

    public func uploaded(host: UUID) async throws -> [FleetFlow] { try await lines(host: host, Self.uploaded) }

    public func flows(host: UUID) async throws -> [FlowRecord] { try await lines(host: host, Self.record) }

    /// A host's rows in key order, each read by `parse` (rows it cannot read are left out).
    private func lines<T>(host: UUID, _ parse: (String) -> T?) async throws -> [T] {
        var result: [T] = []
        for try await line in try await client.query("SELECT \(unescaped: Self.line) FROM host_flows WHERE host_id = \(host) ORDER BY flow_key",
                                                     logger: logger).decode(String.self) {
            if let value = parse(line) { result.append(value) }
        }
        return result
    }
}
