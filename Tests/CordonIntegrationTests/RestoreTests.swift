import CordonCore
import CordonServer
import CordonWire
import Foundation
import Logging
import Testing

/// The server's database restored from a backup older than what the hosts applied (issue 22), at
/// the store: a real PostgreSQL, a real `pg_dump` and `pg_restore`, reports made by hand. The
/// whole fleet through a restore, with real agents, is `FleetRestoreTests`.
@Suite struct RestoreTests {
    static func report(applied: Int64, observed: IsolationWord, mode: String = "discovery", digest: String? = nil,
                       settled: Bool? = true) -> AgentReport {
        AgentReport(status: AgentStatus(mode: mode, isolated: observed == .isolated, rulesetVersion: nil, rulesetDigest: digest, lostEvents: 0,
                                        guardRestores: 0, guardEscalations: 0, flows: 0, agentVersion: "test", addresses: []),
                    observed: observed, appliedGeneration: applied, applied: nil, local: nil, log: [], flows: [], settled: settled)
    }

    static func rebases(_ db: StoreConcurrencyTests.Database) async throws -> [AuditEntry] {
        try await db.stores.audit.entries(limit: 100).filter { $0.action == "restore re-base" }
    }

    static func isolate(_ db: StoreConcurrencyTests.Database, _ host: UUID, _ state: IsolationWord = .isolated) async throws -> IntentAccepted {
        try await db.stores.desired.request(host: host, IsolationRequest(state: state, reason: "incident"), by: "analyst", tokenID: nil,
                                            idempotencyKey: nil)
    }

    @Test("after a restore from a real pg_dump taken before an isolate/release cycle, the host's next settled report re-bases the server past it: its isolation is kept, a request reaches it again, the audit log says so; a report made mid-apply does not re-base")
    func aRestoredServerReachesItsHostsAgain() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let desired = db.stores.desired
        let host = try await db.host("h")
        let backup = db.lab.directory + "/before.dump"
        try db.cluster.dump(to: backup)

        // After the backup: isolated, released, isolated again; the host applied each.
        var generation: Int64 = 0
        for state in [IsolationWord.isolated, .released, .isolated] {
            generation = try await Self.isolate(db, host, state).generation
            _ = try await desired.observe(host: host, report: Self.report(applied: generation, observed: state))
        }
        #expect(generation == 3)

        try db.cluster.restore(from: backup)
        #expect(try await desired.desired(host: host)?.generation == 0, "the backup's record: released, generation 0")

        // Mid-apply, the observed isolation may be of another moment than the generation: no re-base.
        let busy = try await desired.observe(host: host, report: Self.report(applied: 3, observed: .isolated, settled: false))
        #expect(busy.generation == 0 && busy.isolation.state == .released)
        #expect(try await Self.rebases(db).isEmpty)

        // Without the re-base, every request would be at or below what the host applied, and ignored.
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 3, observed: .isolated))
        #expect(rebased.generation == 3 + 1000, "past anything the lost server may have sent")
        #expect(rebased.isolation.state == .isolated && rebased.isolation.origin == .local, "the host's isolation is kept, never released by the restore")
        #expect(try await desired.desired(host: host)?.generation == 1003)
        let audit = try await Self.rebases(db)
        #expect(audit.count == 1 && audit[0].detail.contains("applied generation 3") && audit[0].detail.contains("at 0"), "\(audit)")
        #expect(try db.cluster.psql("SELECT rebase_detail IS NOT NULL AND rebased_at IS NOT NULL FROM hosts WHERE id = '\(host.uuidString.lowercased())'") == "t")

        // A request now is newer than anything the host holds; a report sent again changes nothing.
        let release = try await Self.isolate(db, host, .released)
        #expect(release.generation == 1004)
        let again = try await desired.observe(host: host, report: Self.report(applied: 3, observed: .isolated))
        #expect(again.generation == 1004 && again.isolation.state == .released && again.isolation.origin == .server)
        #expect(try await Self.rebases(db).count == 1)
    }

    @Test("a restored mode and policy the host does not run are dropped, a pending mode intent is superseded, and a policy the database does not hold is reported lost; a mode the host runs is kept")
    func aRestoredModeThatTheHostDoesNotRunIsLeftToTheHost() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let desired = db.stores.desired
        let host = try await db.host("h")
        // The backup's document asks for discovery (an earlier rollout's revert), pending; the
        // host has since enforced a policy the restore lost, at generation 7.
        let intent = UUID()
        _ = try db.cluster.psql("""
            UPDATE hosts SET desired = jsonb_set(desired, '{mode}', '{"mode": "discovery", "intent_id": "\(intent.uuidString.lowercased())", "confirm_within": 60}'),
              generation = 2 WHERE id = '\(host.uuidString.lowercased())';
            INSERT INTO intents (id, host_id, kind, generation, state, previous_state, status, requested_by, reason)
            VALUES ('\(intent.uuidString.lowercased())', '\(host.uuidString.lowercased())', 'mode', 2, 'discovery', 'enforce', 'pending', 'apollo', 'revert')
            """)
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 7, observed: .released, mode: "enforce", digest: "sha256:lost"))
        #expect(rebased.generation == 1007 && rebased.mode == nil && rebased.policy == nil)
        let settled = try #require(try await desired.intent(intent))
        #expect(settled.status == .superseded && settled.error?.contains("restored from an older backup") == true,
                "settled by the mode word alone it would have counted as done: \(settled)")
        let next = try await Self.isolate(db, host)
        #expect(next.generation == 1008)
        #expect(try await desired.desired(host: host)?.mode == nil, "the isolation's document leaves the mode to the host")
        let detail = try #require(try await Self.rebases(db).first?.detail)
        #expect(detail.contains("sha256:lost") && detail.contains("does not hold: lost to the restore"), "\(detail)")

        // A host that runs what the document says keeps it.
        let other = try await db.host("g")
        _ = try db.cluster.psql("""
            UPDATE hosts SET desired = jsonb_set(desired, '{mode}', '{"mode": "discovery", "intent_id": "00000000-0000-0000-0000-000000000002", "confirm_within": 60}'),
              generation = 2 WHERE id = '\(other.uuidString.lowercased())'
            """)
        let same = try await desired.observe(host: other, report: Self.report(applied: 5, observed: .released))
        #expect(same.generation == 1005 && same.mode?.mode == .discovery)

        // An agent claiming a generation no restore explains is not followed: its next request
        // would overflow.
        let claimed = try await desired.observe(host: other, report: Self.report(applied: .max, observed: .released))
        #expect(claimed.generation == 1005)
        #expect(try await Self.isolate(db, other).generation == 1006)
    }

    @Test("an isolation the backup holds and the host never confirmed is sent again, never cancelled by a report; a host re-based again and again is no longer followed")
    func aPendingIsolationSurvivesAndRepeatsAreRefused() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let desired = db.stores.desired
        let host = try await db.host("h")
        let pending = try await Self.isolate(db, host)
        #expect(pending.status == .pending && pending.generation == 1)
        // A report claiming the host went past it, released: a restore, or a compromised host.
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 9, observed: .released))
        #expect(rebased.generation == 1009 && rebased.isolation.state == .isolated && rebased.isolation.origin == .server)
        #expect(rebased.isolation.intentID == pending.intentID)
        let pendingID = try #require(UUID(uuidString: pending.intentID))
        let intent = try #require(try await desired.intent(pendingID))
        #expect(intent.status == .pending && intent.generation == 1009, "sent again at the new generation: \(intent)")
        let confirmed = try await desired.observe(host: host, report: Self.report(applied: 1009, observed: .isolated))
        #expect(confirmed.generation == 1009)
        #expect(try await desired.intent(pendingID)?.status == .succeeded)

        // Two more re-bases in the hour are followed; the fourth is refused and changes nothing.
        for round in 1...2 {
            let applied = try await desired.desired(host: host)!.generation + 5
            #expect(try await desired.observe(host: host, report: Self.report(applied: applied, observed: .isolated)).generation == applied + 1000,
                    "re-base \(round + 1)")
        }
        let before = try #require(try await desired.desired(host: host))
        let refused = try await desired.observe(host: host, report: Self.report(applied: before.generation + 5, observed: .released))
        #expect(refused == before, "not re-based a fourth time in an hour")
        #expect(try await Self.rebases(db).count == 3)
    }

    @Test("a rollout the backup holds as running halts without reverting once a host is re-based; its steps and reverts are refused for that host")
    func aRestoredRolloutHaltsWithoutReverting() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let a = try await db.host("a"), b = try await db.host("b")
        let began = Date().addingTimeInterval(-60)
        let rollout = Self.soakedRollout(a, b, began: began)
        try await db.stores.rollouts.create(rollout)
        #expect(try await db.stores.rollouts.restoredSince(rollout.id) == nil)

        _ = try await db.stores.desired.observe(host: a, report: Self.report(applied: 4, observed: .released))
        let why = try #require(try await db.stores.rollouts.restoredSince(rollout.id))
        #expect(why.hasPrefix("host a was re-based: the host had applied generation 4"), "\(why)")
        await #expect(throws: ModeRefusal.restored) {
            _ = try await db.stores.desired.setMode(host: a, .restore(nil), rollout: rollout.id, by: "apollo", reason: "revert")
        }

        // The soak is over: without the re-base the driver would start wave 2 (host b).
        try await RolloutDriver.tick(db.stores, logger: Logger(label: "restore-test"))
        let halted = try #require(try await db.stores.rollouts.rollout(rollout.id))
        #expect(halted.state == .halted && halted.currentWave == 0, "\(halted)")
        #expect(halted.haltReason?.contains("restored from an older backup") == true && halted.haltReason?.contains("nothing reverted") == true)
        #expect(halted.hosts.map(\.state) == [.confirmed, .waiting], "nothing reverted, nothing started")
        #expect(try await db.stores.desired.intents(host: nil, status: nil, limit: 10).filter { $0.kind == .mode }.isEmpty, "no step, no revert")
        #expect(try await db.stores.audit.entries(limit: 20).contains { $0.action == "rollout-halted" })

        // Resumed by an analyst who looked: driven again.
        let resumed = try #require(RolloutPlanner.resume(halted, now: Date()))
        try await db.stores.rollouts.save(resumed)
        #expect(try await db.stores.rollouts.restoredSince(rollout.id) == nil)
    }

    @Test("an isolation asked for after the restore, taken for done against the restored record, is sent again when the host turns out released; a release so taken is said failed")
    func anIsolationAgainstTheRestoredRecordStands() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let desired = db.stores.desired
        let host = try await db.host("h"), other = try await db.host("g")
        // The backup: both hosts isolated, confirmed; since then the hosts were released (h) and
        // kept isolated (g) at generation 5, and the server restored.
        for id in [host, other] {
            let isolated = try await Self.isolate(db, id)
            _ = try await desired.observe(host: id, report: Self.report(applied: isolated.generation, observed: .isolated))
        }
        _ = try db.cluster.psql("UPDATE hosts SET last_seen = now() - interval '1 minute'")
        let again = try await Self.isolate(db, host)
        #expect(again.status == .succeeded, "the restored record says isolated and confirmed")
        let release = try await Self.isolate(db, other, .released)
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 5, observed: .released))
        #expect(rebased.isolation.state == .isolated && rebased.isolation.origin == .server && rebased.isolation.intentID == again.intentID)
        let againID = try #require(UUID(uuidString: again.intentID)), releaseID = try #require(UUID(uuidString: release.intentID))
        let reopened = try #require(try await desired.intent(againID))
        #expect(reopened.status == .pending && reopened.generation == 1005, "\(reopened)")
        #expect(release.status == .pending, "a release changes the document")
        let kept = try await desired.observe(host: other, report: Self.report(applied: 5, observed: .isolated))
        #expect(kept.isolation.state == .isolated && kept.isolation.origin == .local, "the host's isolation, as an echo")
        let released = try #require(try await desired.intent(releaseID))
        #expect(released.status != .succeeded && released.status != .pending, "\(released)")
    }

    @Test("for its first 45 s a server drives no rollout (no step, no wave) unless to halt it after a re-base")
    func rolloutsHeldAfterAStart() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let a = try await db.host("a"), b = try await db.host("b")
        let began = Date().addingTimeInterval(-60)
        let rollout = Self.soakedRollout(a, b, began: began)
        try await db.stores.rollouts.create(rollout)
        try await db.stores.rollouts.save(rollout)  // its wave's start and soak, as a driver stored them
        let logger = Logger(label: "restore-test")
        try await RolloutDriver.tick(db.stores, logger: logger, started: Date())
        #expect(try await db.stores.rollouts.rollout(rollout.id)?.currentWave == 0, "held: the soak is over, yet no wave starts")
        try await RolloutDriver.tick(db.stores, logger: logger, started: Date().addingTimeInterval(-RolloutDriver.startGrace))
        let after = try #require(try await db.stores.rollouts.rollout(rollout.id))
        #expect(after.currentWave == 1, "after the grace it goes on: \(after)")
    }

    @Test("the host's flow head: a batch that follows on moves it, one from past a restored head does not, so the agent sends the rest again")
    func flowHead() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let flows = db.stores.flows
        let host = try await db.host("h")
        #expect(try await flows.acknowledge(host: host, after: 40, through: 50) == 50, "none known yet (a server upgraded from 0.2.0): the agent's")
        #expect(try await flows.acknowledge(host: host, after: 50, through: 80) == 80)
        let backup = db.lab.directory + "/flows.dump"
        try db.cluster.dump(to: backup)
        #expect(try await flows.acknowledge(host: host, after: 80, through: 120) == 120)
        try db.cluster.restore(from: backup)
        #expect(try await flows.acknowledge(host: host, after: 120, through: 130) == 80, "rows 81 to 120 were lost: sent again from 80")
        #expect(try await flows.acknowledge(host: host, after: 80, through: 130) == 130)
        #expect(try await flows.acknowledge(host: host, after: 100, through: 110) == 130, "a batch sent again moves nothing back")
        // Most reports carry no new rows; those must not rewrite the host's row.
        let version = "SELECT xmin FROM hosts WHERE id = '\(host.uuidString.lowercased())'"
        let before = try db.cluster.psql(version)
        #expect(try await flows.acknowledge(host: host, after: 130, through: 130) == 130)
        #expect(try await flows.acknowledge(host: host, after: 100, through: 110) == 130)
        #expect(try db.cluster.psql(version) == before, "a report that moves no head writes no row version")
        #expect(try await flows.acknowledge(host: UUID(), after: 0, through: 5) == nil, "no such host")
    }

    /// A running two-wave rollout whose first wave (`first`, confirmed, its "before" recorded)
    /// began at `began` and soaked by then; `second` waits for the next wave.
    static func soakedRollout(_ first: UUID, _ second: UUID, began: Date) -> Rollout {
        let hosts = [Rollout.Host(id: first, hostname: "a", wave: 0, state: .confirmed, generation: 1, previous: Rollout.Previous(mode: nil, policy: nil),
                                  startedAt: began, changedAt: began),
                     Rollout.Host(id: second, hostname: "b", wave: 1, changedAt: began)]
        return Rollout(id: UUID(), selector: "all", mode: .discovery, waves: ["1", "100%"], soakSeconds: 1, confirmWindowSeconds: 60, maxFailures: 0,
                       state: .running, currentWave: 0, waveStartedAt: began, soakUntil: began, failures: 0, haltReason: nil, createdBy: "apollo",
                       createdAt: began, updatedAt: began, hosts: hosts)
    }
}
