import CordonWire
import Foundation
import Logging
import PostgresNIO

/// The record of every host, as the API shows it.
public protocol HostStore: Sendable {
    func hosts(limit: Int) async throws -> [HostView]
    func host(_ id: UUID) async throws -> HostView?
    /// The agents whose long polls ran since the last call: their connection is alive.
    func seen(_ ids: [UUID]) async throws
    /// Hosts enrolled (not revoked), and those of them connected now: the metrics' gauges.
    func counts() async throws -> (enrolled: Int, connected: Int)
}

public struct PostgresHostStore: HostStore {
    /// A host whose agent has not polled for this long is not connected (a poll lasts 25 s; polls
    /// are written every 5 s).
    public static let connectedWithin: Double = 40
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    private static let columns = """
        id, hostname, machine_id, tags::text, addresses::text, agent_version, enrolled_at, last_seen, revoked_at IS NOT NULL, status::text,
        desired->'isolation'->>'state', observed_state, generation, observed_generation, desired_at, log_problems::bigint, tag_sources::text,
        EXISTS (SELECT 1 FROM hosts other WHERE other.machine_id = hosts.machine_id AND other.id <> hosts.id AND other.revoked_at IS NULL)
        """

    private func views(_ rows: PostgresRowSequence) async throws -> [HostView] {
        var result: [HostView] = []
        let now = Date()
        for try await row in rows {
            let (id, hostname, machineID, tags, addresses, version, enrolled, lastSeen, revoked, status) =
                try row.decode((UUID, String, String, String, String, String, Date, Date?, Bool, String?).self)
            let columns = row.makeRandomAccess()
            let desired = try columns[10].decode(String.self, context: .default)
            let observed = try columns[11].decode(String?.self, context: .default)
            let generation = try columns[12].decode(Int64.self, context: .default)
            let observedGeneration = try columns[13].decode(Int64.self, context: .default)
            let desiredAt = try columns[14].decode(Date.self, context: .default)
            let problems = try columns[15].decode(Int64.self, context: .default)
            let tagSources = try columns[16].decode(String.self, context: .default)
            let duplicate = try columns[17].decode(Bool.self, context: .default)
            let report = status.flatMap { try? Wire.decode(AgentStatus.self, from: Data($0.utf8)) }
            let isolation = IsolationView(
                desired: IsolationWord(rawValue: desired) ?? .released, observed: observed.flatMap(IsolationWord.init),
                generation: generation, observedGeneration: observedGeneration,
                pendingSince: observedGeneration < generation ? Time.text(desiredAt) : nil)
            result.append(HostView(
                id: id.uuidString.lowercased(), hostname: hostname, machineID: machineID,
                tags: (try? Wire.decode([String: String].self, from: Data(tags.utf8))) ?? [:],
                tagSources: (try? Wire.decode([String: String].self, from: Data(tagSources.utf8))) ?? [:], duplicateMachineID: duplicate,
                addresses: (try? Wire.decode([String].self, from: Data(addresses.utf8))) ?? [],
                agentVersion: version, enrolledAt: Time.text(enrolled), lastSeen: lastSeen.map(Time.text),
                connected: !revoked && lastSeen.map { now.timeIntervalSince($0) < Self.connectedWithin } == true, revoked: revoked,
                mode: report?.mode, ruleset: report?.rulesetVersion.map { RulesetInForce(version: $0, digest: report?.rulesetDigest) },
                lostEvents: report?.lostEvents ?? 0, guardRestores: report?.guardRestores ?? 0, guardEscalations: report?.guardEscalations ?? 0,
                logProblems: Int(problems), isolation: isolation))
        }
        return result
    }

    public func hosts(limit: Int) async throws -> [HostView] {
        try await views(try await client.query("SELECT \(unescaped: Self.columns) FROM hosts ORDER BY hostname, id LIMIT \(limit)", logger: logger))
    }

    public func host(_ id: UUID) async throws -> HostView? {
        try await views(try await client.query("SELECT \(unescaped: Self.columns) FROM hosts WHERE id = \(id)", logger: logger)).first
    }

    public func counts() async throws -> (enrolled: Int, connected: Int) {
        let rows = try await client.query("""
            SELECT count(*) FILTER (WHERE revoked_at IS NULL),
                   count(*) FILTER (WHERE revoked_at IS NULL AND last_seen > now() - make_interval(secs => \(Self.connectedWithin)))
            FROM hosts
            """, logger: logger)
        for try await (enrolled, connected) in rows.decode((Int64, Int64).self) { return (Int(enrolled), Int(connected)) }
        return (0, 0)
    }

    public func seen(_ ids: [UUID]) async throws {
        guard !ids.isEmpty else { return }
        try await client.query("UPDATE hosts SET last_seen = now() WHERE id = ANY(\(ids)::uuid[])", logger: logger)
    }
}
