import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// `/api/v1/intents` and the rules of isolation requests: the latest wins, a key replays, a cancel
/// undoes only what is still pending.
@Suite struct IntentsRouteTests {
    @Test func anIdempotencyKeyReplaysTheSameIntent() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let first = try await s.isolate(host.id, reason: "incident 7", key: "soar-run-7")
            #expect(first.status == .accepted)
            let again = try await s.isolate(host.id, reason: "incident 7", key: "soar-run-7")
            #expect(again.status == .accepted)
            #expect(again["intent_id"] as? String == first["intent_id"] as? String)
            #expect(again["generation"] as? Int == 1)
            // One intent, one generation: the replay changed nothing.
            #expect(try await s.get("/api/v1/intents?host_id=\(host.id)", token: s.viewer).items.count == 1)
            #expect(try await s.stores.desired.desired(host: UUID(uuidString: host.id)!)?.generation == 1)

            let reused = try await s.isolate(host.id, reason: "another incident", key: "soar-run-7")
            #expect(reused.status == .unprocessableContent)
            #expect(reused.field == "Idempotency-Key")
            #expect(reused.error == "this key was used for another request")

            let other = try await s.enroll(hostname: "web-2")
            let elsewhere = try await s.isolate(other.id, reason: "incident 7", key: "soar-run-7")
            #expect(elsewhere.status == .unprocessableContent)
            #expect(elsewhere.field == "Idempotency-Key")

            // Keys are each token's own: another token's same key is another request.
            let byAdmin = try await s.isolate(host.id, reason: "incident 7", key: "soar-run-7", token: s.admin)
            #expect(byAdmin.status == .accepted)
            #expect(byAdmin["intent_id"] as? String != first["intent_id"] as? String)
        }
    }

    @Test func theLatestIntentSupersedesThePendingOne() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let isolate = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            let release = try await s.isolate(host.id, "released", reason: "false positive")
            #expect(release["generation"] as? Int == 2)
            let releaseID = try #require(release["intent_id"] as? String)

            let first = try await s.get("/api/v1/intents/\(isolate)", token: s.viewer)
            #expect(first["status"] as? String == "superseded")
            #expect(first["error"] as? String == "superseded by intent \(releaseID) (released, by rita)")
            #expect(first["completed_at"] is String)
            let pending = try await s.get("/api/v1/intents?status=pending", token: s.viewer)
            #expect(pending.items.map { $0["id"] as? String } == [releaseID])
        }
    }

    @Test func whatTheHostAlreadyHasSucceedsAtOnce() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            #expect(try await s.post("/agent/v1/report", token: host.credential, TestServer.report(observed: "released")).status == .ok)
            let release = try await s.isolate(host.id, "released", reason: "")
            #expect(release.status == .accepted)
            #expect(release["status"] as? String == "succeeded")
            #expect(release["generation"] as? Int == 0)
            #expect(try await s.stores.desired.desired(host: UUID(uuidString: host.id)!)?.generation == 0)
        }
    }

    @Test func aReportSettlesThePendingIntent() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            let report = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(observed: "isolated", applied: 1))
            #expect(report.status == .ok)
            #expect((report["state"] as? [String: Any])?["generation"] as? Int == 1)

            let settled = try await s.get("/api/v1/intents/\(intent)", token: s.viewer)
            #expect(settled["status"] as? String == "succeeded")
            let shown = try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)
            #expect(shown.isolation?["observed"] as? String == "isolated")
            #expect(shown.isolation?["observed_generation"] as? Int == 1)
            #expect(shown.isolation?["pending_since"] is NSNull)
            #expect(shown["connected"] as? Bool == true)
            s.db.advance(PostgresHostStore.connectedWithin + 1)
            #expect(try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)["connected"] as? Bool == false, "silent past the window: not connected")
        }
    }

    @Test func aHostThatReportsTheOtherStateFailsTheIntent() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            _ = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(observed: "released", applied: 1))
            let failed = try await s.get("/api/v1/intents/\(intent)", token: s.viewer)
            #expect(failed["status"] as? String == "failed")
            #expect(failed["error"] as? String == "the host reports released")
        }
    }

    @Test func aCancelReturnsToThePreviousStateAndIsAudited() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            let canceled = try await s.post("/api/v1/intents/\(intent)/cancel", token: s.responder, "")
            #expect(canceled.status == .ok)
            #expect(canceled["status"] as? String == "superseded")
            #expect(canceled["error"] as? String == "canceled by rita")

            let desired = try #require(try await s.stores.desired.desired(host: UUID(uuidString: host.id)!))
            #expect(desired.generation == 2)
            #expect(desired.isolation.state == .released)
            #expect(desired.isolation.intentID == nil)
            #expect(desired.isolation.reason == "intent \(intent) canceled")

            let audit = try await s.stores.audit.entries(limit: 1).first
            #expect(audit?.action == "cancel intent")
            #expect(audit?.actor == "rita")
            #expect(audit?.target == host.id)
        }
    }

    @Test func aSettledIntentCannotBeCanceled() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            _ = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(observed: "isolated", applied: 1))
            let audited = try await s.stores.audit.entries(limit: 100).count

            let refused = try await s.post("/api/v1/intents/\(intent)/cancel", token: s.responder, "")
            #expect(refused.status == .conflict)
            #expect(refused.field == "id")
            #expect(refused.error == "intent \(intent) is succeeded, not pending: nothing to cancel")
            #expect(try await s.stores.desired.desired(host: UUID(uuidString: host.id)!)?.isolation.state == .isolated)
            #expect(try await s.stores.audit.entries(limit: 100).count == audited)

            let superseded = try #require(try await s.isolate(host.id, "released", reason: "")["intent_id"] as? String)
            _ = try await s.isolate(host.id, reason: "again")
            let late = try await s.post("/api/v1/intents/\(superseded)/cancel", token: s.responder, "")
            #expect(late.status == .conflict)
            #expect(late.error == "intent \(superseded) is superseded, not pending: nothing to cancel")
        }
    }

    @Test func cancelRefusals() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            let viewer = try await s.post("/api/v1/intents/\(intent)/cancel", token: s.viewer, "")
            #expect(viewer.status == .forbidden)
            #expect(viewer.error == "this needs the responder role; the token has viewer")

            let unknown = UUID().uuidString.lowercased()
            let missing = try await s.post("/api/v1/intents/\(unknown)/cancel", token: s.responder, "")
            #expect(missing.status == .notFound)
            #expect(missing.error == "no intent with id \(unknown)")
            let bad = try await s.post("/api/v1/intents/nope/cancel", token: s.responder, "")
            #expect(bad.status == .badRequest)
            #expect(bad.field == "id")
            #expect(try await s.get("/api/v1/intents/\(intent)", token: s.viewer)["status"] as? String == "pending")
        }
    }

    @Test func listFiltersAreChecked() async throws {
        try await withServer { s in
            let status = try await s.get("/api/v1/intents?status=done", token: s.viewer)
            #expect(status.status == .badRequest)
            #expect(status.field == "status")
            #expect(status.error == "expected one of pending, succeeded, failed, superseded")
            for limit in ["0", "10001", "ten"] {
                let reply = try await s.get("/api/v1/intents?limit=\(limit)", token: s.viewer)
                #expect(reply.status == .badRequest, "\(limit)")
                #expect(reply.field == "limit")
            }
            let host = try await s.get("/api/v1/intents?host_id=web-1", token: s.viewer)
            #expect(host.status == .badRequest)
            #expect(host.field == "host_id")

            let h = try await s.enroll()
            for _ in 0..<3 { _ = try await s.isolate(h.id) }
            let limited = try await s.get("/api/v1/intents?limit=2", token: s.viewer)
            #expect(limited.status == .ok)
            // Newest first.
            #expect(limited.items.map { $0["generation"] as? Int } == [3, 2])
        }
    }

    @Test func everyStateChangeIsAudited() async throws {
        try await withServer { s in
            _ = try await s.post("/agent/v1/enroll", token: nil, TestServer.object([
                "secret": "cordon_enroll_nope", "hostname": "h", "machine_id": "m", "addresses": [String](), "agent_version": "0.3.0", "tags": [String: String](),
            ]))
            let host = try await s.enroll()
            let intent = try #require(try await s.isolate(host.id)["intent_id"] as? String)
            _ = try await s.post("/api/v1/intents/\(intent)/cancel", token: s.responder, "")
            let local = TestServer.report(observed: "isolated", applied: 2, local: [
                "state": "isolated", "operator": "ops", "reason": "saw it first", "at": 1_800_000_000, "sequence": 4,
            ])
            #expect(try await s.post("/agent/v1/report", token: host.credential, local).status == .ok)

            let audit = try await s.get("/api/v1/audit", token: s.admin)
            #expect(audit.status == .ok)
            #expect(audit.items.map { $0["action"] as? String } == ["local isolated", "cancel intent", "isolation isolated", "enroll", "enroll refused"])
            #expect(audit.items.first?["actor"] as? String == "local: ops")
            #expect(audit.items.first?["detail"] as? String == "saw it first")
        }
    }
}
