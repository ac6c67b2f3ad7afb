import CordonWire
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// A request the store refuses, as the API says it.
public enum IsolationRefusal: Error, Equatable {
    case noHost
    case revoked
    case noIntent
    /// The Idempotency-Key was used before for another host or state.
    case keyReused
    case notPending(IntentStatus)
}

/// A rollout's step the store refuses.
public enum ModeRefusal: Error, Equatable {
    /// Enforce, and no assignment gives the host a policy.
    case noPolicy
    /// The host was re-based after the rollout's wave began (the database was restored from an
    /// older backup): what the rollout knows of it is older than what it runs, so neither a step
    /// nor a revert is made; the driver halts the rollout.
    case restored
}

/// One desired-state document per host (`DesiredState`), with a generation that only grows, and
/// the intents that set it. The latest intent wins: a new one supersedes a pending one, so
/// nothing stays pending behind a host that is offline (the flaw of the source documents'
/// console).
public protocol DesiredStateStore: Sendable {
    func request(host: UUID, _ request: IsolationRequest, by name: String, tokenID: UUID?, idempotencyKey: String?) async throws -> IntentAccepted
    func cancel(intent: UUID, by name: String) async throws -> IntentView
    func desired(host: UUID) async throws -> DesiredState?
    /// The agent's report of what it observed and applied; answers the desired state after it.
    func observe(host: UUID, report: AgentReport) async throws -> DesiredState
    func intent(_ id: UUID) async throws -> IntentView?
    func intents(host: UUID?, status: IntentStatus?, limit: Int) async throws -> [IntentView]
    /// How many intents are in each status: the metrics' gauges.
    func intentCounts() async throws -> [IntentStatus: Int]
    /// A rollout's step or revert: the document's mode and policy at the next generation, as a
    /// mode intent; the isolation stays as it is. Returns the generation and the mode and
    /// policy the document had before.
    func setMode(host: UUID, _ change: ModeChange, rollout: UUID, by name: String, reason: String) async throws -> (generation: Int64, previous: Rollout.Previous)
}

/// What a rollout asks of one host's document.
public enum ModeChange: Sendable, Equatable {
    /// The mode; with enforce, the host's effective policy as its assignments make it now.
    case rollout(ModeWord, confirmWithin: Int64)
    /// Back to what the document asked before the rollout's step (nil mode: discovery).
    case restore(Rollout.Previous?)
}

extension ModeChange {
    /// The document's mode and policy after the change; nil when it cannot be made (enforce
    /// with no assigned policy).
    public func apply(to document: DesiredState, assigned: EffectivePolicy?, intent: UUID) -> (ModeIntent, EffectivePolicy?)? {
        let id = intent.uuidString.lowercased()
        switch self {
        case .rollout(.enforce, let window):
            guard let assigned else { return nil }
            return (ModeIntent(mode: .enforce, intentID: id, confirmWithin: window), assigned)
        case .rollout(.discovery, let window):
            return (ModeIntent(mode: .discovery, intentID: id, confirmWithin: window), nil)
        case .restore(let previous):
            let mode = previous?.mode
            return (ModeIntent(mode: mode?.mode ?? .discovery, intentID: id, confirmWithin: mode?.confirmWithin ?? 120),
                    mode?.mode == .enforce ? previous?.policy : nil)
        }
    }
}

public struct PostgresDesiredStateStore: DesiredStateStore {
    /// NOTIFY channel whose payload is a host id: its desired state changed.
    public static let channel = "cordon_desired"
    /// The first key of the advisory locks on Idempotency-Keys: apart from every other advisory lock.
    static let keyLockSpace: Int32 = 7411002
    let client: PostgresClient
    let logger: Logger
    let refusals = RefusalLog()

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func intentCounts() async throws -> [IntentStatus: Int] {
        var counts: [IntentStatus: Int] = [:]
        for try await (status, count) in try await client.query("SELECT status, count(*) FROM intents GROUP BY status", logger: logger)
            .decode((String, Int64).self) {
            if let status = IntentStatus(rawValue: status) { counts[status] = Int(count) }
        }
        return counts
    }

    private struct Row {
        var desired: DesiredState
        var observed: IsolationWord?
        var observedGeneration: Int64
        var revoked: Bool
    }

    /// The stored document, its generation taken from the column (the one SQL compares).
    /// One that does not decode is an error, never a default: a default would be "released"
    /// and would release an isolated host.
    static func document(_ text: String, generation: Int64) throws -> DesiredState {
        var document: DesiredState
        do { document = try Wire.decode(DesiredState.self, from: Data(text.utf8)) } catch {
            throw UnreadableDocument(detail: Wire.describe(error).message)
        }
        document.generation = generation
        return document
    }

    struct UnreadableDocument: Error, CustomStringConvertible {
        let detail: String
        var description: String { "a host's desired-state document in the database does not read (\(detail)); not guessing it" }
    }

    private func lockHost(_ connection: PostgresConnection, _ host: UUID) async throws -> Row? {
        let rows = try await connection.query("""
            SELECT desired::text, generation, observed_state, observed_generation, revoked_at IS NOT NULL
            FROM hosts WHERE id = \(host) FOR UPDATE
            """, logger: logger)
        for try await (desired, generation, observed, observedGeneration, revoked) in rows.decode((String, Int64, String?, Int64, Bool).self) {
            return Row(desired: try Self.document(desired, generation: generation), observed: observed.flatMap(IsolationWord.init),
                       observedGeneration: observedGeneration, revoked: revoked)
        }
        return nil
    }

    /// Writes the document at its (next) generation; the pending intent of the same kind it
    /// replaces is superseded (a rollout's step never supersedes an analyst's isolation).
    private func setDesired(_ connection: PostgresConnection, host: UUID, _ document: DesiredState, kind: IntentKind = .isolation,
                            supersededBecause why: String) async throws {
        try await connection.query("""
            UPDATE intents SET status = 'superseded', completed_at = now(), error = \(why)
            WHERE host_id = \(host) AND status = 'pending' AND kind = \(kind.rawValue)
            """, logger: logger)
        try await write(connection, host: host, document)
    }

    /// The document at its generation, and the replicas told.
    private func write(_ connection: PostgresConnection, host: UUID, _ document: DesiredState) async throws {
        try await connection.query("""
            UPDATE hosts SET desired = \(String(decoding: Wire.encode(document), as: UTF8.self))::jsonb, generation = \(document.generation),
              desired_at = now() WHERE id = \(host)
            """, logger: logger)
        // Delivered at commit, to every replica: the one holding this host's connection wakes it.
        try await connection.query("SELECT pg_notify(\(Self.channel), \(host.uuidString.lowercased()))", logger: logger)
    }

    /// The document with its isolation replaced, at the next generation; the rest stays.
    private static func isolating(_ row: Row, _ state: IsolationWord, origin: DesiredState.Origin, intent: UUID?, reason: String,
                                  by name: String) -> DesiredState {
        var document = row.desired
        document.generation += 1
        document.isolation = DesiredState.Isolation(state: state, origin: origin, intentID: intent?.uuidString.lowercased(), reason: reason,
                                                    requestedBy: name, extraWhitelist: row.desired.isolation.extraWhitelist)
        return document
    }

    public func request(host: UUID, _ request: IsolationRequest, by name: String, tokenID: UUID?, idempotencyKey: String?) async throws -> IntentAccepted {
        try await client.transaction(logger: logger) { connection in
            if let idempotencyKey {
                // Two requests with one key for two hosts lock different rows: the key needs a lock
                // of its own, taken first (always before the host's), or both insert and the unique
                // index answers the second with an error instead of the 422 the key deserves.
                try await connection.query("""
                    SELECT pg_advisory_xact_lock(\(Self.keyLockSpace), hashtext(\(tokenID?.uuidString ?? "") || ':' || \(idempotencyKey)))
                    """, logger: logger)
            }
            guard let row = try await lockHost(connection, host) else { throw IsolationRefusal.noHost }
            if let idempotencyKey {
                let rows = try await connection.query("""
                    SELECT id, host_id, state, generation, status, reason, external_id FROM intents
                    WHERE token_id = \(tokenID) AND idempotency_key = \(idempotencyKey)
                    """, logger: logger)
                for try await (id, intentHost, state, generation, status, reason, external) in rows.decode((UUID, UUID, String, Int64, String, String, String?).self) {
                    // A replay is the same request: any difference means the key names another one.
                    guard intentHost == host, state == request.state.rawValue, reason == request.reason, external == request.externalID else {
                        throw IsolationRefusal.keyReused
                    }
                    return IntentAccepted(intentID: id.uuidString.lowercased(), generation: generation, status: IntentStatus(rawValue: status) ?? .pending)
                }
            }
            guard !row.revoked else { throw IsolationRefusal.revoked }
            let id = UUID()
            // Already so, and the host says so: a success at once, with nothing for the agent to do.
            let current = row.desired.isolation.state
            if current == request.state, row.observed == request.state, row.observedGeneration >= row.desired.generation {
                try await connection.query("""
                    INSERT INTO intents (id, host_id, kind, generation, state, previous_state, status, requested_by, token_id, completed_at, reason,
                                         external_id, idempotency_key)
                    VALUES (\(id), \(host), 'isolation', \(row.desired.generation), \(request.state.rawValue), \(current.rawValue), 'succeeded', \(name),
                            \(tokenID), now(), \(request.reason), \(request.externalID), \(idempotencyKey))
                    """, logger: logger)
                return IntentAccepted(intentID: id.uuidString.lowercased(), generation: row.desired.generation, status: .succeeded)
            }
            let document = Self.isolating(row, request.state, origin: .server, intent: id, reason: request.reason, by: name)
            try await setDesired(connection, host: host, document,
                                 supersededBecause: "superseded by intent \(id.uuidString.lowercased()) (\(request.state.rawValue), by \(name))")
            try await connection.query("""
                INSERT INTO intents (id, host_id, kind, generation, state, previous_state, status, requested_by, token_id, reason, external_id,
                                     idempotency_key)
                VALUES (\(id), \(host), 'isolation', \(document.generation), \(request.state.rawValue), \(current.rawValue), 'pending', \(name),
                        \(tokenID), \(request.reason), \(request.externalID), \(idempotencyKey))
                """, logger: logger)
            return IntentAccepted(intentID: id.uuidString.lowercased(), generation: document.generation, status: .pending)
        }
    }

    public func cancel(intent id: UUID, by name: String) async throws -> IntentView {
        try await client.transaction(logger: logger) { connection in
            // Only the host an intent is for never changes; everything else is read again under
            // the host's lock. A status read before it could be stale: the intent superseded
            // meanwhile by another analyst's, whose isolation this cancel would then undo.
            var host: UUID?
            for try await value in try await connection.query("SELECT host_id FROM intents WHERE id = \(id)", logger: logger).decode(UUID.self) {
                host = value
            }
            guard let host else { throw IsolationRefusal.noIntent }
            guard let row = try await lockHost(connection, host) else { throw IsolationRefusal.noHost }
            guard let intent = try await intent(id, on: connection) else { throw IsolationRefusal.noIntent }
            guard intent.status == .pending else { throw IsolationRefusal.notPending(intent.status) }
            // Every new intent supersedes the pending one in the transaction that sets it, so under
            // the lock a pending intent is the host's current one; said here rather than assumed.
            guard row.desired.isolation.intentID == id.uuidString.lowercased() else { throw IsolationRefusal.notPending(.superseded) }
            var previous = IsolationWord.released
            for try await state in try await connection.query("SELECT previous_state FROM intents WHERE id = \(id)", logger: logger).decode(String.self) {
                previous = IsolationWord(rawValue: state) ?? .released
            }
            try await setDesired(connection, host: host,
                                 Self.isolating(row, previous, origin: .server, intent: nil, reason: "intent \(id.uuidString.lowercased()) canceled", by: name),
                                 supersededBecause: "canceled by \(name)")
            guard let canceled = try await self.intent(id, on: connection) else { throw IsolationRefusal.noIntent }
            return canceled
        }
    }

    public func setMode(host: UUID, _ change: ModeChange, rollout: UUID, by name: String, reason: String) async throws -> (generation: Int64, previous: Rollout.Previous) {
        try await client.transaction(logger: logger) { connection in
            guard let row = try await lockHost(connection, host) else { throw IsolationRefusal.noHost }
            guard !row.revoked else { throw IsolationRefusal.revoked }
            for try await _ in try await connection.query("""
                SELECT 1 FROM hosts h, rollouts r
                WHERE h.id = \(host) AND r.id = \(rollout) AND h.rebased_at >= coalesce(r.wave_started_at, r.created_at)
                """, logger: logger) { throw ModeRefusal.restored }
            var assigned: EffectivePolicy?
            for try await text in try await connection.query("SELECT assigned_policy::text FROM hosts WHERE id = \(host)", logger: logger)
                .decode(String?.self) { assigned = text.flatMap { try? Wire.decode(EffectivePolicy.self, from: Data($0.utf8)) } }
            let id = UUID()
            guard let (mode, policy) = change.apply(to: row.desired, assigned: assigned, intent: id) else { throw ModeRefusal.noPolicy }
            let previous = Rollout.Previous(mode: row.desired.mode, policy: row.desired.policy)
            var document = row.desired
            document.generation += 1
            document.mode = mode
            document.policy = policy
            try await setDesired(connection, host: host, document, kind: .mode,
                                 supersededBecause: "superseded by intent \(id.uuidString.lowercased()) (\(mode.mode.rawValue), rollout \(rollout.uuidString.lowercased()))")
            try await connection.query("""
                INSERT INTO intents (id, host_id, kind, generation, state, previous_state, status, requested_by, reason, rollout_id)
                VALUES (\(id), \(host), 'mode', \(document.generation), \(mode.mode.rawValue), \(row.desired.mode?.mode.rawValue ?? "discovery"), 'pending',
                        \(name), \(reason), \(rollout))
                """, logger: logger)
            // What the host ran before the rollout is kept with the step, in this transaction: a
            // step made again (its replica died before it stored the rollout) finds it there
            // instead of taking the rollout's own document for "before".
            guard case .rollout = change else { return (document.generation, previous) }
            var kept = previous
            for try await text in try await connection.query("""
                UPDATE rollout_hosts SET previous = coalesce(previous, \(String(decoding: Wire.encode(previous), as: UTF8.self))::jsonb),
                  generation = \(document.generation)
                WHERE rollout_id = \(rollout) AND host_id = \(host) RETURNING previous::text
                """, logger: logger).decode(String.self) {
                if let stored = try? Wire.decode(Rollout.Previous.self, from: Data(text.utf8)) { kept = stored }
            }
            return (document.generation, kept)
        }
    }

    public func desired(host: UUID) async throws -> DesiredState? {
        let rows = try await client.query("SELECT desired::text, generation FROM hosts WHERE id = \(host)", logger: logger)
        for try await (text, generation) in rows.decode((String, Int64).self) { return try Self.document(text, generation: generation) }
        return nil
    }

    public func observe(host: UUID, report: AgentReport) async throws -> DesiredState {
        try await client.transaction(logger: logger) { connection in
            guard var row = try await lockHost(connection, host) else { throw IsolationRefusal.noHost }
            if report.appliedGeneration > row.desired.generation, let rebased = try await rebase(connection, host: host, row, report) {
                row.desired = rebased
            }
            // Never past what the server issued: a generation it has not made cannot have been applied.
            var observedGeneration = min(max(row.observedGeneration, report.appliedGeneration), row.desired.generation)
            var document = row.desired
            // A local emergency is never undone by the server: it becomes the desired state, as a
            // succeeded intent of the host's operator, and whatever was pending is superseded by it.
            // Known by its decision-log sequence and state (older agents: its time and operator),
            // so a report sent again is the same change, never a second intent and generation.
            if let local = report.local, try await !isKnown(local, host: host, on: connection) {
                let id = UUID()
                document = Self.isolating(row, local.state, origin: .local, intent: id, reason: local.reason, by: local.operator)
                try await setDesired(connection, host: host, document,
                                     supersededBecause: "superseded by a local \(local.state == .isolated ? "isolation" : "release") on the host by \(local.operator)")
                try await connection.query("""
                    INSERT INTO intents (id, host_id, kind, origin, generation, state, previous_state, status, requested_by, requested_at, completed_at,
                                         reason, local_sequence)
                    VALUES (\(id), \(host), 'isolation', 'local', \(document.generation), \(local.state.rawValue), \(row.desired.isolation.state.rawValue),
                            'succeeded', \(local.operator), to_timestamp(\(Double(local.at))), now(), \(local.reason), \(local.sequence))
                    """, logger: logger)
                observedGeneration = document.generation
            }
            if let applied = report.applied {
                try await connection.query("""
                    UPDATE intents SET status = \(applied.ok ? "succeeded" : "failed"), error = \(applied.error), completed_at = now(),
                      rolled_back = \(applied.rolledBack)
                    WHERE host_id = \(host) AND generation = \(applied.generation) AND status = 'pending'
                    """, logger: logger)
            }
            // Applied, but the result was lost with a connection: settled from what the host observes.
            try await connection.query("""
                UPDATE intents SET completed_at = now(),
                  status = CASE WHEN state = \(report.observed.rawValue) THEN 'succeeded' ELSE 'failed' END,
                  error = CASE WHEN state = \(report.observed.rawValue) THEN NULL ELSE \("the host reports " + report.observed.rawValue) END
                WHERE host_id = \(host) AND status = 'pending' AND kind = 'isolation' AND generation <= \(observedGeneration)
                """, logger: logger)
            try await connection.query("""
                UPDATE intents SET completed_at = now(),
                  status = CASE WHEN state = \(report.status.mode) THEN 'succeeded' ELSE 'failed' END,
                  error = CASE WHEN state = \(report.status.mode) THEN NULL ELSE \("the host reports mode " + report.status.mode) END
                WHERE host_id = \(host) AND status = 'pending' AND kind = 'mode' AND generation <= \(observedGeneration)
                """, logger: logger)
            let status = String(decoding: Wire.encode(report.status), as: UTF8.self)
            let addresses = String(decoding: Wire.encode(report.status.addresses), as: UTF8.self)
            try await connection.query("""
                UPDATE hosts SET observed_state = \(report.observed.rawValue), observed_generation = \(observedGeneration), last_seen = now(),
                  status = \(status)::jsonb, addresses = \(addresses)::jsonb, agent_version = \(report.status.agentVersion)
                WHERE id = \(host)
                """, logger: logger)
            return document
        }
    }

    /// How far ahead of its record a host may be re-based: a backup a million requests behind one
    /// host is no restore, and an agent that claims Int64's end must not make every later
    /// request for its host overflow.
    static let largestRebase: Int64 = 1_000_000
    /// How far past the host's applied generation a re-base puts the server: past anything the
    /// lost server may have sent that the host holds and has not applied yet, so that no later
    /// request is taken by the agent for one it has seen.
    static let rebaseMargin: Int64 = 1000
    /// Re-bases of one host in an hour beyond which the server stops following it: a restore
    /// re-bases each host once, while two databases serving at once (a lagging standby promoted
    /// beside a live primary) or a host forging its reports would do it again and again.
    static let rebasesPerHour = 3

    /// The host applied a generation this server never issued: the database was restored from a
    /// backup older than the host's last document. The server's generation moves past the
    /// host's, so that its next request is newer than anything the host holds (else every request
    /// would be ignored as old), and the document takes what the host runs, so that nothing the
    /// restore lost is undone: the observed isolation (re-issuing the backup's could release an
    /// isolated host) unless the backup holds an isolation the host never confirmed, which is
    /// sent again (a report never cancels a pending isolation); no mode or policy unless the
    /// backup's is what the host runs (a restored mode intent would bring an older policy back
    /// at the next generation). What the backup held pending is superseded: the host went past
    /// it. The host's row keeps the re-base, which halts the rollouts the backup held as running
    /// (`RolloutDriver`). Nil when the report cannot be trusted for it; said in the server's log.
    private func rebase(_ connection: PostgresConnection, host: UUID, _ row: Row, _ report: AgentReport) async throws -> DesiredState? {
        let name = host.uuidString.lowercased()
        let record = row.desired.generation, applied = report.appliedGeneration
        // A report made mid-apply pairs a generation with an isolation of another moment; the
        // agent reports again as soon as it has applied.
        guard report.settled != false else { return nil }
        guard applied - record <= Self.largestRebase else {
            if refusals.shouldLog(host) {
                logger.error("host \(name) reports generation \(applied) applied, the server's record is at \(record): too far ahead for a restore, not re-based")
            }
            return nil
        }
        var recent = 0
        for try await count in try await connection.query("""
            SELECT count(*) FROM audit_log WHERE action = 'restore re-base' AND target = \(name) AND at > now() - interval '1 hour'
            """, logger: logger).decode(Int.self) { recent = count }
        guard recent < Self.rebasesPerHour else {
            guard refusals.shouldLog(host) else { return nil }
            logger.error("""
                host \(name) reports generation \(applied) applied, the server's record is at \(record), and it was re-based \(recent) times in the last hour: \
                not re-based again. Two databases may be serving at once (a standby promoted while the old primary still serves), or the host forges its reports
                """)
            return nil
        }
        var document = row.desired
        document.generation = applied + Self.rebaseMargin
        var kept: [String] = []
        var keptIntent: UUID?
        let isolation = row.desired.isolation
        // The analyst's word that the host should be isolated stands: an isolation asked for
        // since the host's last contact (against a record the host may have left, so it may even
        // read succeeded at once), else the backup's, if its intent is still pending.
        var candidates: [UUID] = []
        for try await id in try await connection.query("""
            SELECT i.id FROM intents i JOIN hosts h ON h.id = i.host_id
            WHERE i.host_id = \(host) AND i.kind = 'isolation' AND i.origin = 'server' AND i.state = 'isolated' AND i.status IN ('pending', 'succeeded')
              AND i.requested_at > coalesce(h.last_seen, '-infinity')
            ORDER BY i.requested_at DESC LIMIT 1
            """, logger: logger).decode(UUID.self) { candidates.append(id) }
        if isolation.origin == .server, isolation.state == .isolated, let id = isolation.intentID.flatMap(UUID.init(uuidString:)) { candidates.append(id) }
        if report.observed != .isolated {
            for id in candidates where keptIntent == nil {
                for try await (by, reason) in try await connection.query("""
                    UPDATE intents SET status = 'pending', generation = \(document.generation), completed_at = NULL, error = NULL
                    WHERE id = \(id) AND status IN ('pending', 'succeeded') AND (status = 'pending' OR requested_at > (SELECT coalesce(last_seen, '-infinity') FROM hosts WHERE id = \(host)))
                    RETURNING requested_by, reason
                    """, logger: logger).decode((String, String).self) {
                    keptIntent = id
                    document.isolation = DesiredState.Isolation(state: .isolated, origin: .server, intentID: id.uuidString.lowercased(), reason: reason,
                                                                requestedBy: by, extraWhitelist: isolation.extraWhitelist)
                    kept.append("the isolation asked by \(by), which the host never applied, sent again (intent \(id.uuidString.lowercased()))")
                }
            }
        }
        if keptIntent == nil {
            // As the host runs it, and origin local: an echo the agent never applies, so a report
            // that raced a change on the host cannot undo that change.
            document.isolation = DesiredState.Isolation(state: report.observed, origin: .local, intentID: nil,
                                                        reason: "as the host runs it: the server's database was restored from an older backup",
                                                        requestedBy: "cordon-server", extraWhitelist: isolation.extraWhitelist)
            if isolation.state != report.observed {
                kept.append("the host's isolation (\(report.observed.rawValue)) over the backup's (\(isolation.state.rawValue))")
            }
        }
        if let mode = document.mode {
            let runs = report.status.mode == mode.mode.rawValue && (mode.mode == .discovery || report.status.rulesetDigest == document.policy?.digest)
            if !runs {
                document.mode = nil
                document.policy = nil
                kept.append("the host's mode (\(report.status.mode)) over the backup's (\(mode.mode.rawValue)\(row.desired.policy.map { ", policy \($0.digest)" } ?? ""))")
            }
        }
        if report.status.mode == ModeWord.enforce.rawValue, let digest = report.status.rulesetDigest, try await !isKnown(policy: digest, on: connection) {
            kept.append("the host enforces policy \(digest), which this database does not hold: lost to the restore")
        }
        // Taken for done against the restored record, yet the host runs otherwise: said as failed.
        try await connection.query("""
            UPDATE intents SET status = 'failed', completed_at = now(),
              error = \("the server's database was restored from an older backup; the host reports " + report.observed.rawValue + ": ask again")
            WHERE host_id = \(host) AND kind = 'isolation' AND status = 'succeeded' AND state <> \(report.observed.rawValue)
              AND id IS DISTINCT FROM \(keptIntent) AND requested_at > (SELECT coalesce(last_seen, '-infinity') FROM hosts WHERE id = \(host))
            """, logger: logger)
        try await connection.query("""
            UPDATE intents SET status = 'superseded', completed_at = now(),
              error = \("the server's database was restored from an older backup; the host had gone past this intent (generation \(applied))")
            WHERE host_id = \(host) AND status = 'pending' AND id IS DISTINCT FROM \(keptIntent)
            """, logger: logger)
        let detail = "the host had applied generation \(applied), the server's record was at \(record): re-based to \(document.generation); kept "
            + (kept.isEmpty ? "the backup's document, which is what the host runs" : kept.joined(separator: "; "))
        try await write(connection, host: host, document)
        // The server's clock, as a rollout's wave start is (`RolloutStore.restoredSince`).
        try await connection.query("UPDATE hosts SET rebased_at = \(Date()), rebase_detail = \(detail) WHERE id = \(host)", logger: logger)
        // What a rollout knows the host ran before its step is older than what it runs: a
        // resumed rollout records it anew at its step, and nothing puts the backup's back.
        try await connection.query("""
            UPDATE rollout_hosts SET previous = NULL WHERE host_id = \(host) AND rollout_id IN (SELECT id FROM rollouts WHERE state IN ('running', 'halted'))
            """, logger: logger)
        try await connection.query("""
            INSERT INTO audit_log (actor, role, action, target, detail) VALUES ('cordon-server', NULL, 'restore re-base', \(name), \(detail))
            """, logger: logger)
        logger.warning("host \(name): \(detail)")
        return document
    }

    /// A policy some host's assignment or document names: one a restore did not lose.
    private func isKnown(policy digest: String, on connection: PostgresConnection) async throws -> Bool {
        for try await _ in try await connection.query("""
            SELECT 1 FROM hosts WHERE assigned_policy->>'digest' = \(digest) OR desired->'policy'->>'digest' = \(digest) LIMIT 1
            """, logger: logger) { return true }
        return false
    }

    private func isKnown(_ local: LocalIsolationChange, host: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("""
            SELECT 1 FROM intents WHERE host_id = \(host) AND state = \(local.state.rawValue)
              AND (local_sequence = \(local.sequence)
                   OR (\(local.sequence)::bigint IS NULL AND origin = 'local' AND requested_by = \(local.operator)
                       AND requested_at = to_timestamp(\(Double(local.at)))))
            LIMIT 1
            """, logger: logger)
        for try await _ in rows { return true }
        return false
    }

    static let intentColumns = """
        id, host_id, kind, origin, state, generation, status, requested_by, requested_at, completed_at, reason, external_id, error
        """

    private static func views(_ rows: PostgresRowSequence) async throws -> [IntentView] {
        var result: [IntentView] = []
        for try await (id, host, kind, origin, state, generation, status, by, at, completed, reason, external, error)
            in rows.decode((UUID, UUID, String, String, String, Int64, String, String, Date, Date?, String, String?, String?).self) {
            result.append(IntentView(id: id.uuidString.lowercased(), hostID: host.uuidString.lowercased(), kind: IntentKind(rawValue: kind) ?? .isolation,
                                     origin: DesiredState.Origin(rawValue: origin) ?? .server, state: state,
                                     generation: generation, status: IntentStatus(rawValue: status) ?? .pending, requestedBy: by,
                                     requestedAt: Time.text(at), completedAt: completed.map(Time.text), reason: reason, externalID: external, error: error))
        }
        return result
    }

    private func intent(_ id: UUID, on connection: PostgresConnection) async throws -> IntentView? {
        try await Self.views(try await connection.query("SELECT \(unescaped: Self.intentColumns) FROM intents WHERE id = \(id)", logger: logger)).first
    }

    public func intent(_ id: UUID) async throws -> IntentView? {
        try await Self.views(try await client.query("SELECT \(unescaped: Self.intentColumns) FROM intents WHERE id = \(id)", logger: logger)).first
    }

    public func intents(host: UUID?, status: IntentStatus?, limit: Int) async throws -> [IntentView] {
        try await Self.views(try await client.query("""
            SELECT \(unescaped: Self.intentColumns) FROM intents
            WHERE (\(host)::uuid IS NULL OR host_id = \(host)) AND (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue))
            ORDER BY requested_at DESC, generation DESC LIMIT \(limit)
            """, logger: logger))
    }
}

/// When each host's refused re-base was last logged: a refused host goes on reporting every few
/// seconds, and one error line per host per quarter hour (per server) says what a line per report
/// would, without burying the rest of the log.
final class RefusalLog: Sendable {
    static let interval: TimeInterval = 900
    private let logged = Mutex<[UUID: Date]>([:])

    /// Whether to log a refusal for `host` now; if so, it counts as logged.
    func shouldLog(_ host: UUID, now: Date = Date()) -> Bool {
        logged.withLock { logged in
            if let last = logged[host], now.timeIntervalSince(last) < Self.interval { return false }
            logged = logged.filter { now.timeIntervalSince($0.value) < Self.interval }
            logged[host] = now
            return true
        }
    }
}
