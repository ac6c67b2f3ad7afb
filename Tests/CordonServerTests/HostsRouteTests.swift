import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// `/api/v1/hosts`: the record, and the isolation requests with their refusals.
@Suite struct HostsRouteTests {
    @Test func anEnrolledHostIsListedAndShown() async throws {
        try await withServer { s in
            let host = try await s.enroll(hostname: "db-1")
            let list = try await s.get("/api/v1/hosts", token: s.viewer)
            #expect(list.status == .ok)
            #expect(list.items.count == 1)
            #expect(list.items.first?["hostname"] as? String == "db-1")

            let shown = try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)
            #expect(shown.status == .ok)
            #expect(shown["id"] as? String == host.id)
            #expect(shown["revoked"] as? Bool == false)
            #expect(shown.isolation?["desired"] as? String == "released")
            // Nulls are written out: a reader relies on every field being present.
            #expect(shown.isolation?.keys.contains("pending_since") == true)
            #expect(shown.isolation?["pending_since"] is NSNull)
        }
    }

    @Test func anUnknownHostIs404AndABadIDIs400() async throws {
        try await withServer { s in
            let unknown = UUID().uuidString.lowercased()
            for path in ["", "/log", "/flows"] {
                let reply = try await s.get("/api/v1/hosts/\(unknown)\(path)", token: s.viewer)
                #expect(reply.status == .notFound, "\(path)")
                #expect(reply.field == "id")
                #expect(reply.error == "no host with id \(unknown)")
            }
            let isolate = try await s.isolate(unknown)
            #expect(isolate.status == .notFound)
            #expect(isolate.field == "id")

            let bad = try await s.get("/api/v1/hosts/not-a-uuid", token: s.viewer)
            #expect(bad.status == .badRequest)
            #expect(bad.field == "id")
            #expect(bad.error == "expected a UUID")
        }
    }

    @Test func anotherMethodOnAKnownPathIs405WithAllow() async throws {
        try await withServer { s in
            let reply = try await s.call(.delete, "/api/v1/hosts", token: s.admin)
            #expect(reply.status == .methodNotAllowed)
            #expect(reply.headers[.allow] == "GET")
            #expect(reply.error == "DELETE is not allowed on /api/v1/hosts; allowed: GET")

            let nowhere = try await s.get("/api/v1/nowhere", token: s.admin)
            #expect(nowhere.status == .notFound)
            #expect(nowhere.error == "no such route: GET /api/v1/nowhere")
        }
    }

    @Test func badIsolationBodiesNameTheirField() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let path = "/api/v1/hosts/\(host.id)/isolation"
            let cases: [(body: String, status: HTTPResponse.Status, field: String?, error: String?)] = [
                ("not json", .badRequest, nil, "the body is not valid JSON"),
                (#"{"state":"frozen","reason":"x"}"#, .badRequest, "state", nil),
                (#"{"state":"isolated"}"#, .badRequest, "reason", "is required"),
                (#"{"state":"isolated","reason":7}"#, .badRequest, "reason", "expected a string"),
                (#"{"state":"isolated","reason":"a\u0000b"}"#, .badRequest, "reason", "text may not contain NUL (\\u0000)"),
                (#"{"state":"isolated","reason":"   "}"#, .unprocessableContent, "reason", "an isolation needs a reason"),
                (TestServer.object(["state": "isolated", "reason": String(repeating: "r", count: 1001)]), .unprocessableContent, "reason",
                 "at most 1000 characters"),
                (TestServer.object(["state": "isolated", "reason": "x", "external_id": String(repeating: "e", count: 201)]), .unprocessableContent,
                 "external_id", "at most 200 characters"),
            ]
            for c in cases {
                let reply = try await s.post(path, token: s.responder, c.body)
                #expect(reply.status == c.status, "\(c.body.prefix(60))")
                #expect(reply.field == c.field, "\(c.body.prefix(60))")
                if let error = c.error { #expect(reply.error == error, "\(c.body.prefix(60))") }
            }
            let longKey = try await s.isolate(host.id, key: String(repeating: "k", count: 201))
            #expect(longKey.status == .badRequest)
            #expect(longKey.field == "Idempotency-Key")
            // Nothing was asked of the host, and nothing audited.
            #expect(try await s.stores.desired.desired(host: UUID(uuidString: host.id)!)?.generation == 0)
            #expect(try await s.stores.audit.entries(limit: 10).allSatisfy { $0.action == "enroll" })
            // A release needs no reason.
            #expect(try await s.isolate(host.id, "released", reason: "").status == .accepted)
        }
    }

    @Test func anIsolationIsAcceptedPendingAndAudited() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let reply = try await s.isolate(host.id, reason: "ransomware on db-1")
            #expect(reply.status == .accepted)
            #expect(reply["status"] as? String == "pending")
            #expect(reply["generation"] as? Int == 1)
            let intent = try #require(reply["intent_id"] as? String)

            let shown = try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)
            #expect(shown.isolation?["desired"] as? String == "isolated")
            #expect(shown.isolation?["generation"] as? Int == 1)
            #expect(shown.isolation?["pending_since"] is String)

            let audit = try await s.stores.audit.entries(limit: 1).first
            #expect(audit?.action == "isolation isolated")
            #expect(audit?.actor == "rita")
            #expect(audit?.role == "responder")
            #expect(audit?.target == host.id)
            #expect(audit?.detail == "intent \(intent) generation 1 pending: ransomware on db-1")
        }
    }

    @Test func aRevokedHostCannotBeIsolated() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            _ = try await s.stores.enrollment.revokeHost(UUID(uuidString: host.id)!)
            let reply = try await s.isolate(host.id)
            #expect(reply.status == .conflict)
            #expect(reply.field == "id")
            #expect(reply.error == "host \(host.id) is revoked")
        }
    }
}
