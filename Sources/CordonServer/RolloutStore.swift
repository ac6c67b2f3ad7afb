import CordonCore
import CordonWire
import Foundation
import Logging
import PostgresNIO

/// Rollouts, their waves and each host's step; what the driver needs to know of a wave's hosts.
public protocol RolloutStore: Sendable {
    func create(_ rollout: Rollout) async throws
    func rollout(_ id: UUID) async throws -> Rollout?
    /// Newest first.
    func rollouts(limit: Int) async throws -> [Rollout]
    func running() async throws -> [UUID]
    func save(_ rollout: Rollout) async throws
    /// Runs `body` holding the rollouts' lock, the one thing that changes a rollout: the driver
    /// of one replica at a time, or an analyst's halt, resume or abort. Without `wait`, nil when
    /// another holds it. The lock goes with its holder's connection, so a replica killed while
    /// holding it frees it.
    func exclusive<T: Sendable>(wait: Bool, _ body: @Sendable () async throws -> T) async throws -> T?
    /// What the hosts are now, for the rollout's mode: connected, already in sync, with a policy
    /// to enforce, and the agent's result for the generation the step set (`generations`).
    func observe(hosts: [UUID], generations: [UUID: Int64], mode: ModeWord) async throws -> [UUID: RolloutObservation]
    /// Any host of the fleet re-based since the rollout's current wave began (or the rollout
    /// began): the database was restored from a backup older than what that host runs, so the
    /// rollout's record may be too (a rollout aborted after the backup is running in it),
    /// whether that host is one of its own or not. The first such host's name and why; nil
    /// when there is none.
    func restoredSince(_ rollout: UUID) async throws -> String?
}

public struct PostgresRolloutStore: RolloutStore {
    static let lockKey: Int64 = 7_411_004
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func create(_ r: Rollout) async throws {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("""
                INSERT INTO rollouts (id, selector, mode, waves, soak_seconds, confirm_window_seconds, max_failures, state, current_wave, failures,
                                      created_by, created_at, updated_at)
                VALUES (\(r.id), \(r.selector), \(r.mode.rawValue), \(String(decoding: Wire.encode(r.waves), as: UTF8.self))::jsonb, \(r.soakSeconds),
                        \(r.confirmWindowSeconds), \(r.maxFailures), \(r.state.rawValue), \(r.currentWave), \(r.failures), \(r.createdBy),
                        \(r.createdAt), \(r.updatedAt))
                """, logger: logger)
            try await Self.saveHosts(connection, r, logger: logger)
        }
    }

    private static func saveHosts(_ connection: PostgresConnection, _ r: Rollout, logger: Logger) async throws {
        guard !r.hosts.isEmpty else { return }
        let previous = r.hosts.map { $0.previous.map { String(decoding: Wire.encode($0), as: UTF8.self) } ?? "" }
        // Arrays of optionals do not go over the wire: -1 and "" stand for none.
        try await connection.query("""
            INSERT INTO rollout_hosts (rollout_id, host_id, position, wave, state, generation, detail, previous, started_at, changed_at)
            SELECT \(r.id), h.id, h.position, h.wave, h.state, NULLIF(h.generation, -1), NULLIF(h.detail, ''), NULLIF(h.previous, '')::jsonb,
                   CASE WHEN h.started = 0 THEN NULL ELSE to_timestamp(h.started) END, to_timestamp(h.changed)
            FROM unnest(\(r.hosts.map(\.id))::uuid[], \(Array(0..<r.hosts.count))::integer[], \(r.hosts.map(\.wave))::integer[],
                        \(r.hosts.map(\.state.rawValue))::text[], \(r.hosts.map { $0.generation ?? -1 })::bigint[],
                        \(r.hosts.map { $0.detail ?? "" })::text[], \(previous)::text[],
                        \(r.hosts.map { $0.startedAt?.timeIntervalSince1970 ?? 0 })::float8[], \(r.hosts.map(\.changedAt.timeIntervalSince1970))::float8[])
                 AS h (id, position, wave, state, generation, detail, previous, started, changed)
            ON CONFLICT (rollout_id, host_id) DO UPDATE SET state = excluded.state, generation = excluded.generation, detail = excluded.detail,
              previous = excluded.previous, started_at = excluded.started_at, changed_at = excluded.changed_at
            WHERE (rollout_hosts.state, rollout_hosts.generation, rollout_hosts.detail, rollout_hosts.changed_at)
                  IS DISTINCT FROM (excluded.state, excluded.generation, excluded.detail, excluded.changed_at)
            """, logger: logger)
    }

    public func save(_ r: Rollout) async throws {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("""
                UPDATE rollouts SET state = \(r.state.rawValue), current_wave = \(r.currentWave), wave_started_at = \(r.waveStartedAt),
                  soak_until = \(r.soakUntil), failures = \(r.failures), halt_reason = \(r.haltReason), updated_at = \(r.updatedAt)
                WHERE id = \(r.id)
                """, logger: logger)
            try await Self.saveHosts(connection, r, logger: logger)
        }
    }

    private static let columns = """
        id, selector, mode, waves::text, soak_seconds, confirm_window_seconds, max_failures, state, current_wave, wave_started_at, soak_until,
        failures, halt_reason, created_by, created_at, updated_at
        """

    private func load(_ sql: PostgresQuery) async throws -> [Rollout] {
        var result: [Rollout] = []
        for try await row in try await client.query(sql, logger: logger) {
            let (id, selector, mode, waves, soak, window, maxFailures, state, wave) =
                try row.decode((UUID, String, String, String, Int64, Int64, Int, String, Int).self)
            let c = row.makeRandomAccess()
            result.append(Rollout(
                id: id, selector: selector, mode: ModeWord(rawValue: mode) ?? .enforce,
                waves: (try? Wire.decode([String].self, from: Data(waves.utf8))) ?? [], soakSeconds: soak, confirmWindowSeconds: window,
                maxFailures: maxFailures, state: RolloutState(rawValue: state) ?? .halted, currentWave: wave,
                waveStartedAt: try c[9].decode(Date?.self, context: .default), soakUntil: try c[10].decode(Date?.self, context: .default),
                failures: try c[11].decode(Int.self, context: .default), haltReason: try c[12].decode(String?.self, context: .default),
                createdBy: try c[13].decode(String.self, context: .default), createdAt: try c[14].decode(Date.self, context: .default),
                updatedAt: try c[15].decode(Date.self, context: .default), hosts: []))
        }
        guard !result.isEmpty else { return [] }
        let ids = result.map(\.id)
        var hosts: [UUID: [Rollout.Host]] = [:]
        for try await (rollout, id, hostname, wave, state, generation, detail, previous, started, changed) in try await client.query("""
            SELECT r.rollout_id, r.host_id, h.hostname, r.wave, r.state, r.generation, r.detail, r.previous::text, r.started_at, r.changed_at
            FROM rollout_hosts r JOIN hosts h ON h.id = r.host_id WHERE r.rollout_id = ANY(\(ids)::uuid[]) ORDER BY r.rollout_id, r.position
            """, logger: logger).decode((UUID, UUID, String, Int, String, Int64?, String?, String?, Date?, Date).self) {
            hosts[rollout, default: []].append(Rollout.Host(
                id: id, hostname: hostname, wave: wave, state: RolloutHostState(rawValue: state) ?? .failed, generation: generation, detail: detail,
                previous: previous.flatMap { try? Wire.decode(Rollout.Previous.self, from: Data($0.utf8)) }, startedAt: started, changedAt: changed))
        }
        return result.map { var r = $0; r.hosts = hosts[r.id] ?? []; return r }
    }

    public func rollout(_ id: UUID) async throws -> Rollout? {
        try await load("SELECT \(unescaped: Self.columns) FROM rollouts WHERE id = \(id)").first
    }

    public func rollouts(limit: Int) async throws -> [Rollout] {
        try await load("SELECT \(unescaped: Self.columns) FROM rollouts ORDER BY created_at DESC LIMIT \(limit)")
    }

    public func running() async throws -> [UUID] {
        var ids: [UUID] = []
        for try await id in try await client.query("SELECT id FROM rollouts WHERE state = 'running' ORDER BY created_at", logger: logger)
            .decode(UUID.self) { ids.append(id) }
        return ids
    }

    public func exclusive<T: Sendable>(wait: Bool, _ body: @Sendable () async throws -> T) async throws -> T? {
        try await client.withConnection { connection in
            if wait {
                try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))", logger: logger)
            } else {
                var got = false
                for try await value in try await connection.query("SELECT pg_try_advisory_lock(\(Self.lockKey))", logger: logger).decode(Bool.self) {
                    got = value
                }
                guard got else { return nil }
            }
            do {
                let result = try await body()
                try await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                return result
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                throw error
            }
        }
    }

    public func restoredSince(_ rollout: UUID) async throws -> String? {
        for try await (hostname, detail) in try await client.query("""
            SELECT h.hostname, h.rebase_detail FROM hosts h, rollouts r
            WHERE r.id = \(rollout) AND h.rebased_at >= coalesce(r.wave_started_at, r.created_at)
            ORDER BY h.rebased_at LIMIT 1
            """, logger: logger).decode((String, String?).self) {
            return "host \(hostname) was re-based: \(detail ?? "the server's database was restored from an older backup")"
        }
        return nil
    }

    public func observe(hosts: [UUID], generations: [UUID: Int64], mode: ModeWord) async throws -> [UUID: RolloutObservation] {
        guard !hosts.isEmpty else { return [:] }
        var result: [UUID: RolloutObservation] = [:]
        let rows = try await client.query("""
            SELECT id, coalesce(revoked_at IS NULL AND last_seen > now() - make_interval(secs => \(PostgresHostStore.connectedWithin)), false),
                   desired->'mode'->>'mode', desired->'policy'->>'digest', assigned_policy->>'digest', status->>'mode', status->>'ruleset_digest',
                   observed_generation >= generation
            FROM hosts WHERE id = ANY(\(hosts)::uuid[])
            """, logger: logger)
        for try await (id, connected, desiredMode, desiredDigest, assigned, reportedMode, reportedDigest, applied)
            in rows.decode((UUID, Bool, String?, String?, String?, String?, String?, Bool).self) {
            let inSync = Self.inSync(mode: mode, desiredMode: desiredMode, desiredDigest: desiredDigest, assigned: assigned,
                                     reportedMode: reportedMode, reportedDigest: reportedDigest, applied: applied)
            result[id] = RolloutObservation(connected: connected, inSync: inSync, noPolicy: assigned == nil)
        }
        let stepped = generations.filter { hosts.contains($0.key) }
        if !stepped.isEmpty {
            let ids = Array(stepped.keys)
            for try await (id, status, error, rolledBack, generation) in try await client.query("""
                SELECT i.host_id, i.status, i.error, i.rolled_back, i.generation FROM intents i
                JOIN unnest(\(ids)::uuid[], \(ids.map { stepped[$0]! })::bigint[]) AS s (host, generation)
                  ON i.host_id = s.host AND i.generation = s.generation AND i.kind = 'mode'
                WHERE i.status IN ('succeeded', 'failed')
                """, logger: logger).decode((UUID, String, String?, Bool?, Int64).self) {
                result[id]?.result = AppliedGeneration(generation: generation, ok: status == "succeeded", error: error, rolledBack: rolledBack)
            }
        }
        return result
    }

    /// Already as the rollout wants it: the document asks for the mode (with the assigned policy
    /// when enforcing), the agent applied it and reports the same.
    public static func inSync(mode: ModeWord, desiredMode: String?, desiredDigest: String?, assigned: String?, reportedMode: String?,
                       reportedDigest: String?, applied: Bool) -> Bool {
        guard applied, desiredMode == mode.rawValue, reportedMode == mode.rawValue else { return false }
        return mode == .discovery || (assigned != nil && desiredDigest == assigned && reportedDigest == assigned)
    }
}
