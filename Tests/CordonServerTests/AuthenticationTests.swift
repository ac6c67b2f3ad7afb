import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// Who may call what: bearer tokens, roles, and the wall between API tokens and host credentials.
@Suite struct AuthenticationTests {
    @Test func aRequestWithoutAValidTokenIsUnauthorized() async throws {
        try await withServer { s in
            let none = try await s.get("/api/v1/hosts", token: nil)
            #expect(none.status == .unauthorized)
            #expect(none.error?.contains("Authorization: Bearer") == true)

            let unknown = try await s.get("/api/v1/hosts", token: Credential.generate(.apiToken))
            #expect(unknown.status == .unauthorized)
            #expect(unknown.error == "the token is not valid (unknown or revoked)")

            var basic = try await s.call(.get, "/api/v1/hosts", token: nil, headers: [.authorization: "Basic \(s.viewer)"])
            #expect(basic.status == .unauthorized)
            // The scheme is case-insensitive: the same token after `bearer` is accepted.
            basic = try await s.call(.get, "/api/v1/hosts", token: nil, headers: [.authorization: "bearer \(s.viewer)"])
            #expect(basic.status == .ok)
        }
    }

    @Test func aRevokedTokenIsUnauthorized() async throws {
        try await withServer { s in
            #expect(try await s.get("/api/v1/hosts", token: s.viewer).status == .ok)
            #expect(try await s.stores.tokens.revoke("victor") == 1)
            let reply = try await s.get("/api/v1/hosts", token: s.viewer)
            #expect(reply.status == .unauthorized)
            #expect(reply.error == "the token is not valid (unknown or revoked)")
        }
    }

    @Test func aViewerMayReadButNotIsolate() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let list = try await s.get("/api/v1/hosts", token: s.viewer)
            #expect(list.status == .ok)
            #expect((list["items"] as? [[String: Any]])?.map { $0["id"] as? String } == [host.id])

            let refused = try await s.isolate(host.id, token: s.viewer)
            #expect(refused.status == .forbidden)
            #expect(refused.error == "this needs the responder role; the token has viewer")
            let shown = try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)
            #expect(shown.status == .ok)
            #expect(shown.isolation?["generation"] as? Int == 0)
        }
    }

    @Test func theAuditLogNeedsAnAdministrator() async throws {
        try await withServer { s in
            let refused = try await s.get("/api/v1/audit", token: s.responder)
            #expect(refused.status == .forbidden)
            #expect(refused.error == "this needs the admin role; the token has responder")
            let allowed = try await s.get("/api/v1/audit", token: s.admin)
            #expect(allowed.status == .ok)
            #expect(allowed["items"] is [Any])
        }
    }

    @Test func hostCredentialsAndAPITokensDoNotCross() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let onAPI = try await s.get("/api/v1/hosts", token: host.credential)
            #expect(onAPI.status == .unauthorized)
            #expect(onAPI.error == "the API takes an API token, not a host credential")

            let onAgent = try await s.get("/agent/v1/state?wait=0", token: s.admin)
            #expect(onAgent.status == .unauthorized)
            #expect(onAgent.error == "agent routes take a host credential")

            let secret = try await s.stores.enrollment.createSecret(tags: [:], ttlSeconds: nil, uses: nil, hostTags: true, extraWhitelist: [])
            let withSecret = try await s.get("/agent/v1/state?wait=0", token: secret)
            #expect(withSecret.status == .unauthorized)

            let unknownHost = try await s.get("/agent/v1/state?wait=0", token: Credential.generate(.host))
            #expect(unknownHost.status == .unauthorized)
            #expect(unknownHost["code"] == nil)
        }
    }

    @Test func aRevokedHostIsToldSo() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            #expect(try await s.get("/agent/v1/state?wait=0", token: host.credential).status == .ok)
            #expect(try await s.stores.enrollment.revokeHost(UUID(uuidString: host.id)!))

            let reply = try await s.get("/agent/v1/state?wait=0", token: host.credential)
            #expect(reply.status == .forbidden)
            #expect(reply["code"] as? String == "host_revoked")
            #expect(reply.error == "this host was revoked")
            let report = try await s.post("/agent/v1/report", token: host.credential, TestServer.report())
            #expect(report.status == .forbidden)
            #expect(report["code"] as? String == "host_revoked")
        }
    }
}
