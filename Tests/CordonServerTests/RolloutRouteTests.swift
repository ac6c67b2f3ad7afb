import CordonCore
import CordonServer
import CordonWire
import Foundation
import Logging
import Testing

/// `/api/v1/rollouts` and the driver, in process: requests, validation, and waves moved on by
/// the driver's ticks as agents report.
@Suite struct RolloutRouteTests {
    static let logger = Logger(label: "rollout-tests")

    /// Three web hosts with the web ruleset assigned; each has reported once.
    static func tier(_ s: TestServer) async throws -> (approver: String, hosts: [(id: String, credential: String)]) {
        var hosts: [(id: String, credential: String)] = []
        for name in ["web-1", "web-2", "web-3"] {
            let host = try await s.enroll(hostname: name)
            _ = try await s.call(.patch, "/api/v1/hosts/\(host.id)/tags", token: s.admin, body: #"{"set":{"role":"web"}}"#)
            #expect(try await s.post("/agent/v1/report", token: host.credential, TestServer.report()).status == .ok)
            hosts.append(host)
        }
        let approver = try await s.stores.tokens.create(name: "apollo", role: .approver).token
        #expect(try await s.post("/api/v1/rulesets/web/versions", token: approver, TestServer.object(["content": PolicyRouteTests.webOnly])).status == .created)
        #expect(try await s.post("/api/v1/assignments", token: approver, TestServer.object(["ruleset": "web", "selector": #"role == "web""#])).status == .created)
        return (approver, hosts)
    }

    /// A report of the agent's after applying `generation` (`ok`), enforcing `digest`.
    static func report(applied generation: Int64, ok: Bool = true, rolledBack: Bool? = nil, digest: String?, flows: [[String: Any]] = []) -> String {
        let status: [String: Any] = [
            "mode": digest == nil ? "discovery" : "enforce", "isolated": false, "ruleset_version": digest == nil ? NSNull() : 1 as Any,
            "ruleset_digest": digest ?? NSNull() as Any, "lost_events": 0, "guard_restores": 0, "guard_escalations": 0, "flows": flows.count,
            "agent_version": "0.3.0", "addresses": ["192.0.2.10"],
        ]
        var applied: [String: Any] = ["generation": generation, "ok": ok, "error": ok ? NSNull() as Any : "rolled back: no answer"]
        if let rolledBack { applied["rolled_back"] = rolledBack }
        return TestServer.object(["status": status, "observed": "released", "applied_generation": generation, "applied": applied, "local": NSNull(),
                                  "log": [Any](), "flows": flows])
    }

    static func document(_ s: TestServer, _ host: String) -> DesiredState {
        s.db.tables.withLock { $0.hosts[UUID(uuidString: host)!]!.desired }
    }

    @Test func startIsValidatedAndNeedsTheApproverRole() async throws {
        try await withServer { s in
            let (approver, _) = try await Self.tier(s)
            let body = TestServer.object(["selector": #"role == "web""#])
            #expect(try await s.post("/api/v1/rollouts", token: s.viewer, body).status == .forbidden)
            #expect(try await s.post("/api/v1/rollouts", token: s.responder, body).status == .forbidden)
            for (json, field) in [(#"{"selector":"role =="}"#, "selector"), (#"{"selector":"has(nothing)"}"#, "selector"),
                                  (#"{"selector":"all()","waves":["1","50%"]}"#, "waves"), (#"{"selector":"all()","waves":[]}"#, "waves"),
                                  (#"{"selector":"all()","confirm_window_seconds":0}"#, "confirm_window_seconds"),
                                  (#"{"selector":"all()","soak_seconds":-1}"#, "soak_seconds"), (#"{"selector":"all()","max_failures":-1}"#, "max_failures"),
                                  (#"{"selector":"all()","mode":"chaos"}"#, "mode"), (#"{"waves":["100%"]}"#, "selector")] {
                let reply = try await s.post("/api/v1/rollouts", token: approver, json)
                #expect([.badRequest, .unprocessableContent].contains(reply.status) && reply.field == field, "\(json): \(reply.text)")
            }
            let started = try await s.post("/api/v1/rollouts", token: approver, body)
            #expect(started.status == .created, "\(started.text)")
            #expect(started["state"] as? String == "running" && (started["hosts"] as? [Any])?.count == 3 && started["halt_reason"] is NSNull)
            #expect((started["waves"] as? [[String: Any]])?.map { $0["hosts"] as? Int } == [1, 2])
            let again = try await s.post("/api/v1/rollouts", token: approver, body)
            #expect(again.status == .conflict && again.field == "selector", "one rollout per host at a time: \(again.text)")
            let id = try #require(started["id"] as? String)
            #expect(try await s.get("/api/v1/rollouts/\(id)", token: s.viewer).status == .ok)
            #expect(try await s.get("/api/v1/rollouts/\(UUID())", token: s.viewer).status == .notFound)
            #expect(try await s.post("/api/v1/rollouts/\(id)/halt", token: s.viewer, "").status == .forbidden)
            #expect(try await s.post("/api/v1/rollouts/\(id)/resume", token: approver, "").status == .conflict)
            let audit = s.db.tables.withLock { $0.audit.filter { $0.action == "rollout-start" }.count }
            #expect(audit == 1)
        }
    }

    @Test func aHostWithoutAPolicyOrWithItsOwnRulesetIsRefused() async throws {
        try await withServer { s in
            let (approver, hosts) = try await Self.tier(s)
            let lone = try await s.enroll(hostname: "db-1")
            _ = try await s.call(.patch, "/api/v1/hosts/\(lone.id)/tags", token: s.admin, body: #"{"set":{"role":"db"}}"#)
            let none = try await s.post("/api/v1/rollouts", token: approver, TestServer.object(["selector": #"role == "db""#]))
            #expect(none.status == .unprocessableContent && none.error?.contains("db-1") == true, "\(none.text)")
            // web-1 enforces a ruleset approved on the host: a halt could not put it back.
            #expect(try await s.post("/agent/v1/report", token: hosts[0].credential, Self.report(applied: 0, digest: String(repeating: "a", count: 64))).status == .ok)
            let own = try await s.post("/api/v1/rollouts", token: approver, TestServer.object(["selector": #"role == "web""#]))
            #expect(own.status == .unprocessableContent && own.error?.contains("web-1") == true, "\(own.text)")
        }
    }

    @Test func theDriverMovesTheWavesAsHostsConfirm() async throws {
        try await withServer { s in
            let (approver, hosts) = try await Self.tier(s)
            let started = try await s.post("/api/v1/rollouts", token: approver,
                                           TestServer.object(["selector": #"role == "web""#, "waves": ["1", "100%"], "soak_seconds": 0]))
            let id = try #require(started["id"] as? String)
            // The driver's clock stands still: no confirm window runs out however slowly this runs.
            let now = Date()
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            let first = Self.document(s, hosts[0].id)
            #expect(first.mode?.mode == .enforce && first.mode?.confirmWithin == 120)
            let policy = try #require(first.policy)
            #expect(Self.document(s, hosts[1].id).mode == nil, "the next wave is untouched")
            // The agent confirms.
            #expect(try await s.post("/agent/v1/report", token: hosts[0].credential, Self.report(applied: first.generation, digest: policy.digest)).status == .ok)
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            for host in hosts[1...] {
                let document = Self.document(s, host.id)
                #expect(document.mode?.mode == .enforce && document.policy == policy)
                _ = try await s.post("/agent/v1/report", token: host.credential, Self.report(applied: document.generation, digest: policy.digest))
            }
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            let done = try await s.get("/api/v1/rollouts/\(id)", token: s.viewer)
            #expect(done["state"] as? String == "succeeded", "\(done.text)")
            #expect((done["hosts"] as? [[String: Any]])?.map { $0["state"] as? String } == ["confirmed", "confirmed", "confirmed"])
            let web = try await s.get("/api/v1/hosts/\(hosts[2].id)", token: s.viewer)
            #expect((web["policy"] as? [String: Any])?["sync"] as? String == "in_sync", "\(web.text)")
        }
    }

    @Test func aRegressionHaltsTheRolloutAndPutsTheWaveBack() async throws {
        try await withServer { s in
            let (approver, hosts) = try await Self.tier(s)
            let hourAgo = TimeText.rfc3339(TimeText.now() - 3600)
            // Before the rollout web-1 reached 198.51.100.7:8080, which the web ruleset does not allow.
            let before = TestServer.flow(remote: "198.51.100.7", ["remote_port": 8080, "first_seen": hourAgo, "last_seen": hourAgo, "connections": 12])
            #expect(try await s.post("/agent/v1/report", token: hosts[0].credential, TestServer.report(flows: [before])).status == .ok)
            let started = try await s.post("/api/v1/rollouts", token: approver, TestServer.object(["selector": #"role == "web""#, "waves": ["1", "100%"]]))
            let id = try #require(started["id"] as? String)
            let stepAt = Date().addingTimeInterval(-60)
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { stepAt })
            let stepped = Self.document(s, hosts[0].id)
            let rejected = TestServer.flow(remote: "198.51.100.7", ["remote_port": 8080, "verdict": "rejected", "connections": 3])
            #expect(try await s.post("/agent/v1/report", token: hosts[0].credential,
                                     Self.report(applied: stepped.generation, digest: stepped.policy?.digest, flows: [rejected])).status == .ok)
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { stepAt.addingTimeInterval(5) })
            let halted = try await s.get("/api/v1/rollouts/\(id)", token: s.viewer)
            #expect(halted["state"] as? String == "halted")
            let reason = try #require(halted["halt_reason"] as? String)
            #expect(reason.hasPrefix("host web-1: regression: rejected outbound tcp to 198.51.100.7:8080") && reason.contains("12 connections"), "\(reason)")
            let reverted = Self.document(s, hosts[0].id)
            #expect(reverted.generation == stepped.generation + 1 && reverted.mode?.mode == .discovery && reverted.policy == nil)
            #expect(Self.document(s, hosts[1].id).generation == 0 && Self.document(s, hosts[2].id).generation == 0, "hosts not reached are untouched")
            let actions = s.db.tables.withLock { $0.audit.map(\.action) }
            #expect(actions.contains("rollout-halted"))
        }
    }

    @Test func aStepMadeAgainKeepsWhatTheHostRanBefore() async throws {
        try await withServer { s in
            let (approver, hosts) = try await Self.tier(s)
            let started = try await s.post("/api/v1/rollouts", token: approver, TestServer.object(["selector": #"role == "web""#]))
            let text = try #require(started["id"] as? String)
            let id = try #require(UUID(uuidString: text))
            let host = try #require(UUID(uuidString: hosts[0].id))
            // A replica wrote the step and died before it stored the rollout; the next one writes it again.
            let first = try await s.stores.desired.setMode(host: host, .rollout(.enforce, confirmWithin: 60), rollout: id, by: "apollo", reason: "wave 1")
            let again = try await s.stores.desired.setMode(host: host, .rollout(.enforce, confirmWithin: 60), rollout: id, by: "apollo", reason: "wave 1")
            #expect(again.generation == first.generation + 1)
            #expect(first.previous == Rollout.Previous(mode: nil, policy: nil))
            #expect(again.previous == first.previous, "what the host ran before the rollout, not the rollout's own step")
        }
    }

    @Test func aHaltedRolloutResumesOnlyIfNoOtherTookItsHosts() async throws {
        try await withServer { s in
            let (approver, _) = try await Self.tier(s)
            let body = TestServer.object(["selector": #"role == "web""#])
            let first = try #require(try await s.post("/api/v1/rollouts", token: approver, body)["id"] as? String)
            let halted = try await s.post("/api/v1/rollouts/\(first)/halt", token: approver, #"{"reason":"looking at it"}"#)
            #expect(halted.status == .ok && halted["halt_reason"] as? String == "halt by apollo: looking at it", "\(halted.text)")
            #expect(try await s.post("/api/v1/rollouts", token: approver, body).status == .created, "a halted rollout holds no host")
            let resumed = try await s.post("/api/v1/rollouts/\(first)/resume", token: approver, "")
            #expect(resumed.status == .conflict && resumed.error?.contains("web-1") == true, "\(resumed.text)")
            #expect(try await s.post("/api/v1/rollouts/\(first)/abort", token: approver, "").status == .ok)
        }
    }

    @Test func aHaltSavesEvenWhenAHostOfTheWaveWasRevokedSince() async throws {
        try await withServer { s in
            let (approver, hosts) = try await Self.tier(s)
            let started = try await s.post("/api/v1/rollouts", token: approver, TestServer.object(["selector": #"role == "web""#, "waves": ["100%"]]))
            let id = try #require(started["id"] as? String)
            let now = Date()
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            #expect(Self.document(s, hosts[0].id).mode?.mode == .enforce)
            #expect(try await s.stores.enrollment.revokeHost(try #require(UUID(uuidString: hosts[0].id))))
            let halted = try await s.post("/api/v1/rollouts/\(id)/halt", token: approver, #"{"reason":"web-1 was compromised"}"#)
            #expect(halted.status == .ok && halted["state"] as? String == "halted", "\(halted.text)")
            let rows = try #require(halted["hosts"] as? [[String: Any]])
            #expect(rows.first { $0["hostname"] as? String == "web-1" }?["detail"] as? String == "not put back: revoked", "\(halted.text)")
            for host in hosts[1...] { #expect(Self.document(s, host.id).mode?.mode == .discovery, "the others are put back") }
            try await RolloutDriver.tick(s.stores, logger: Self.logger, now: { now })
            #expect(try await s.get("/api/v1/rollouts/\(id)", token: s.viewer)["state"] as? String == "halted")
        }
    }

    @Test func syncSaysErrorAndDrift() async throws {
        let policy = EffectivePolicy(content: "x", digest: String(repeating: "d", count: 64), sources: [])
        func status(_ digest: String?, recent: Int? = nil) -> AgentStatus {
            var s = AgentStatus(mode: digest == nil ? "discovery" : "enforce", isolated: false, rulesetVersion: digest == nil ? nil : 1, rulesetDigest: digest,
                                lostEvents: 0, guardRestores: 0, guardEscalations: 0, flows: 0, agentVersion: "0.3.0", addresses: [])
            s.recentGuardRestores = recent
            return s
        }
        let d = policy.digest
        func sync(_ report: AgentStatus, desired: String? = String(repeating: "d", count: 64), applied: Bool = true, error: String? = nil, connected: Bool = true) -> String {
            PostgresHostStore.policy(assigned: policy, desired: desired, report: report, connected: connected, applied: applied, modeError: error).sync
        }
        #expect(sync(status(d)) == "in_sync")
        #expect(sync(status(d), connected: false) == "offline")
        #expect(sync(status(nil), desired: nil) == "pending")
        #expect(sync(status(nil), applied: false) == "applying")
        #expect(sync(status(nil)) == "drift", "applied, and the host runs something else (discovery, changed on the host)")
        #expect(sync(status(d, recent: 1)) == "drift", "another program changed the tables lately; the guard put them back")
        #expect(sync(status(nil), error: "the server's policy does not read") == "error")
        #expect(PostgresHostStore.policy(assigned: policy, desired: d, report: status(nil), connected: true, applied: true, modeError: "no").error == "no")
        #expect(GuardHint.text(recent: 2) == nil && GuardHint.text(recent: 3)?.contains("another program keeps reloading nftables") == true)
    }

    @Test func aHostThatJoinsAnAssignedTierHasItsPolicyPendingAtOnce() async throws {
        try await withServer { s in
            _ = try await Self.tier(s)
            let secret = try await s.stores.enrollment.createSecret(tags: ["role": "web"], ttlSeconds: nil, uses: nil, hostTags: false, extraWhitelist: [])
            let reply = try await s.post("/agent/v1/enroll", token: nil, TestServer.object([
                "secret": secret, "hostname": "web-9", "machine_id": "m9", "addresses": ["192.0.2.19"], "agent_version": "0.3.0", "tags": [String: String](),
            ]))
            let id = try #require(reply["host_id"] as? String, "\(reply.text)")
            let policy = try await s.get("/api/v1/hosts/\(id)", token: s.viewer)["policy"] as? [String: Any]
            #expect(policy?["assigned"] is [String: Any], "the tier's policy, without waiting for another change: \(policy ?? [:])")
        }
    }
}
