import CordonCore
import CordonServer
import CordonWire
import Foundation
import Testing

/// The server's database restored from a backup older than what the hosts applied (issue 22).
@Suite struct RestoreTests {
    static func report(applied: Int64, observed: IsolationWord, mode: String = "discovery", digest: String? = nil) -> AgentReport {
        AgentReport(status: AgentStatus(mode: mode, isolated: observed == .isolated, rulesetVersion: nil, rulesetDigest: digest, lostEvents: 0,
                                        guardRestores: 0, guardEscalations: 0, flows: 0, agentVersion: "test", addresses: []),
                    observed: observed, appliedGeneration: applied, applied: nil, local: nil, log: [], flows: [])
    }

    @Test("after a restore from a real pg_dump taken before an isolate/release cycle, the host's next report re-bases the server above it: its isolation is kept, a request reaches it again, the audit log says so")
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
            generation = try await desired.request(host: host, IsolationRequest(state: state, reason: "incident"), by: "analyst", tokenID: nil,
                                                   idempotencyKey: nil).generation
            _ = try await desired.observe(host: host, report: Self.report(applied: generation, observed: state))
        }
        #expect(generation == 3)

        try db.cluster.restore(from: backup)
        #expect(try await desired.desired(host: host)?.generation == 0, "the backup's record: released, generation 0")

        // Without the re-base, every request would be at or below what the host applied, and ignored.
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 3, observed: .isolated))
        #expect(rebased.generation == 3)
        #expect(rebased.isolation.state == .isolated && rebased.isolation.origin == .local, "the host's isolation is kept, never released by the restore")
        #expect(try await desired.desired(host: host)?.generation == 3)
        let audit = try await db.stores.audit.entries(limit: 10)
        #expect(audit.contains { $0.action == "restore re-base" && $0.detail.contains("applied generation 3") && $0.detail.contains("at 0") })

        // A request now is newer than anything the host applied; a report sent again changes nothing.
        let release = try await desired.request(host: host, IsolationRequest(state: .released, reason: "cleared"), by: "analyst", tokenID: nil,
                                                idempotencyKey: nil)
        #expect(release.generation == 4)
        let again = try await desired.observe(host: host, report: Self.report(applied: 3, observed: .isolated))
        #expect(again.generation == 4 && again.isolation.state == .released && again.isolation.origin == .server)
        #expect(try await db.stores.audit.entries(limit: 10).filter { $0.action == "restore re-base" }.count == 1)
    }

    @Test("a restored document's mode is dropped when the host runs something else: a later request never brings an older policy back")
    func aRestoredModeThatTheHostDoesNotRunIsLeftToTheHost() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let desired = db.stores.desired
        let host = try await db.host("h")
        // The backup's document asks for discovery (an earlier rollout's revert); the host has
        // since enforced a policy the restore lost, at generation 7.
        _ = try db.cluster.psql("""
            UPDATE hosts SET desired = jsonb_set(desired, '{mode}', '{"mode": "discovery", "intent_id": "00000000-0000-0000-0000-000000000001", "confirm_within": 60}'),
              generation = 2 WHERE id = '\(host.uuidString.lowercased())'
            """)
        let rebased = try await desired.observe(host: host, report: Self.report(applied: 7, observed: .released, mode: "enforce", digest: "sha256:lost"))
        #expect(rebased.generation == 7 && rebased.mode == nil)
        let next = try await desired.request(host: host, IsolationRequest(state: .isolated, reason: "incident"), by: "analyst", tokenID: nil,
                                             idempotencyKey: nil)
        #expect(next.generation == 8)
        #expect(try await desired.desired(host: host)?.mode == nil, "the isolation's document leaves the mode to the host")
        #expect(try await db.stores.audit.entries(limit: 10).contains { $0.detail.contains("sha256:lost") })

        // A host that runs what the document says keeps it.
        let other = try await db.host("g")
        _ = try db.cluster.psql("""
            UPDATE hosts SET desired = jsonb_set(desired, '{mode}', '{"mode": "discovery", "intent_id": "00000000-0000-0000-0000-000000000002", "confirm_within": 60}'),
              generation = 2 WHERE id = '\(other.uuidString.lowercased())'
            """)
        let same = try await desired.observe(host: other, report: Self.report(applied: 5, observed: .released))
        #expect(same.generation == 5 && same.mode?.mode == .discovery)

        // An agent claiming a generation no restore explains is not followed: its next request
        // would overflow.
        let claimed = try await desired.observe(host: other, report: Self.report(applied: .max, observed: .released))
        #expect(claimed.generation == 5)
        #expect(try await desired.request(host: other, IsolationRequest(state: .isolated, reason: "incident"), by: "analyst", tokenID: nil,
                                          idempotencyKey: nil).generation == 6)
    }
}
