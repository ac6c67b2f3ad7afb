import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// Liveness, readiness, the API's document, and what a database that stops answering looks like.
@Suite struct OperationsRouteTests {
    @Test func livenessNeverAsksTheDatabase() async throws {
        try await withServer(readiness: { Readiness(database: "the database failed", notifications: nil) }) { s in
            let live = try await s.get("/healthz", token: nil)
            #expect(live.status == .ok)
            #expect(live["ok"] as? Bool == true)
        }
    }

    @Test func readinessSaysWhatIsWrong() async throws {
        try await withServer { s in
            let ready = try await s.get("/readyz", token: nil)
            #expect(ready.status == .ok)
            #expect(ready["ready"] as? Bool == true)
            #expect(ready.headers[.retryAfter] == nil)
        }
        try await withServer(readiness: { Readiness(database: nil, notifications: "not listening yet") }) { s in
            let ready = try await s.get("/readyz", token: nil)
            #expect(ready.status == .serviceUnavailable)
            #expect(ready.headers[.retryAfter] == "5")
            #expect(ready["ready"] as? Bool == false)
            #expect(ready["notifications"] as? String == "not listening yet")
            #expect(ready["database"] is NSNull)
        }
    }

    @Test func theDocumentIsServedWithoutAToken() async throws {
        try await withServer { s in
            let document = try await s.get("/api/v1/openapi.json", token: nil)
            #expect(document.status == .ok)
            #expect(document.headers[.contentType] == "application/json")
            #expect((document["paths"] as? [String: Any])?.keys.contains("/api/v1/hosts/{id}/isolation") == true)
        }
    }

    @Test func aDatabaseThatHangsIs503WithRetryAfter() async throws {
        try await withServer(deadline: 0.3, adjust: { $0.audit = HangingAuditStore() }) { s in
            let started = ContinuousClock.now
            let reply = try await s.get("/api/v1/audit", token: s.admin)
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.headers[.retryAfter] == "5")
            #expect(reply.error == "the server's database did not answer in time; what was asked may or may not have been done: "
                + "try again (with the same Idempotency-Key)")
            // The deadline (0.3 s here), not the store's ten minutes. The bound is wide on purpose:
            // under `swift test` the namespace tests hold the concurrency pool's few threads for
            // long stretches, and every timer here waits for one of them.
            #expect(ContinuousClock.now - started < .seconds(300))
            // What does not touch the hanging store still answers.
            #expect(try await s.get("/api/v1/hosts", token: s.viewer).status == .ok)
        }
    }

    @Test func aTokenLookupThatHangsIs503NotUnauthorized() async throws {
        try await withServer(deadline: 0.3, adjust: { $0.tokens = HangingTokenStore() }) { s in
            let reply = try await s.get("/api/v1/hosts", token: s.viewer)
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.headers[.retryAfter] == "5")
        }
    }

    @Test func aStoreThatFailsOtherwiseIs500WithoutDetails() async throws {
        try await withServer(adjust: { $0.audit = FailingAuditStore() }) { s in
            let reply = try await s.get("/api/v1/audit", token: s.admin)
            #expect(reply.status == .internalServerError)
            #expect(reply.error == "internal error; the server's log has the details")
            #expect(!reply.text.contains("secret detail"))
        }
    }
}

/// Stores that never answer, as a paused PostgreSQL's: ten minutes, so a deadline that did not
/// fire shows as a request that took them.
struct HangingAuditStore: AuditStore {
    func record(actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) async throws {
        try await Task.sleep(for: .seconds(600))
    }
    func entries(limit: Int) async throws -> [AuditEntry] {
        try await Task.sleep(for: .seconds(600))
        return []
    }
}

struct HangingTokenStore: TokenStore {
    func create(name: String, role: Role) async throws -> (id: UUID, token: String) { throw Failure("not here") }
    func revoke(_ nameOrID: String) async throws -> Int { 0 }
    func authenticate(token: String) async throws -> Principal? {
        try await Task.sleep(for: .seconds(600))
        return nil
    }
    func isRevokedHost(token: String) async throws -> Bool { false }
}

struct FailingAuditStore: AuditStore {
    func record(actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) async throws {
        throw Failure("secret detail")
    }
    func entries(limit: Int) async throws -> [AuditEntry] { throw Failure("secret detail") }
}
