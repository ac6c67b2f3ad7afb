import CordonCore
import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// Tags, selectors, reviews, versions and assignments, in process.
@Suite struct PolicyRouteTests {
    /// Two web hosts and a database host, tagged by the admin; web-1 uploaded a flow to 203.0.113.20:443.
    static func fleet(_ s: TestServer) async throws -> (web1: String, web2: String, db: String) {
        let web1 = try await s.enroll(hostname: "web-1"), web2 = try await s.enroll(hostname: "web-2"), db = try await s.enroll(hostname: "db-1")
        for (host, tags) in [(web1.id, ["role": "web"]), (web2.id, ["role": "web"]), (db.id, ["role": "db"])] {
            let reply = try await s.call(.patch, "/api/v1/hosts/\(host)/tags", token: s.admin, body: TestServer.object(["set": tags]))
            #expect(reply.status == .ok, "\(reply.text)")
        }
        let report = try await s.post("/agent/v1/report", token: web1.credential,
                                      TestServer.report(flows: [TestServer.flow(remote: "203.0.113.20")]))
        #expect(report.status == .ok, "\(report.text)")
        return (web1.id, web2.id, db.id)
    }

    static let webOnly = """
        name: web
        appliesTo: 'role == "web"'
        networks:
          - name: web
            entries: [203.0.113.20]
            services: [tcp/443]
        outgoing:
          - to: web
        """
    static let nothing = "name: web\nappliesTo: 'role == \"web\"'\nnetworks:\n"

    @Test func tagsAreAnAdminsAndSayWhoSetThem() async throws {
        try await withServer { s in
            let host = try await s.enroll(hostname: "web-1")
            let path = "/api/v1/hosts/\(host.id)/tags"
            let viewer = try await s.call(.patch, path, token: s.viewer, body: #"{"set":{"role":"web"}}"#)
            #expect(viewer.status == .forbidden && viewer.error?.contains("admin") == true)
            let set = try await s.call(.patch, path, token: s.admin, body: #"{"set":{"role":"web","pci":"yes"}}"#)
            #expect(set.status == .ok)
            #expect(set["tags"] as? [String: String] == ["role": "web", "pci": "yes"])
            #expect(set["tag_sources"] as? [String: String] == ["role": "admin", "pci": "admin"])
            let unset = try await s.call(.patch, path, token: s.admin, body: #"{"unset":["pci"]}"#)
            #expect(unset["tags"] as? [String: String] == ["role": "web"])
            for (body, field) in [(#"{}"#, "set"), (#"{"set":{"a":"1"},"unset":["a"]}"#, "unset"), (#"{"set":{"bad key":"1"}}"#, "set"),
                                  (#"{"set":null}"#, "set")] {
                let reply = try await s.call(.patch, path, token: s.admin, body: body)
                #expect([.badRequest, .unprocessableContent].contains(reply.status) && reply.field == field, "\(body): \(reply.text)")
            }
            let many = Dictionary(uniqueKeysWithValues: (0..<32).map { ("k\($0)", "v") })
            let over = try await s.call(.patch, path, token: s.admin, body: TestServer.object(["set": many]))
            #expect(over.status == .unprocessableContent && over.field == "set" && over.error?.contains("33 tags") == true, "\(over.text)")
            #expect(try await s.call(.patch, "/api/v1/hosts/\(UUID().uuidString)/tags", token: s.admin, body: #"{"set":{"a":"1"}}"#).status == .notFound)
            let audit = s.db.tables.withLock { $0.audit.filter { $0.action == "tags" }.map(\.detail) }
            #expect(audit == ["set pci=yes, set role=web", "unset pci"], "\(audit)")
        }
    }

    @Test func aSelectorPreviewsWhatItMatchesAndAnErrorNamesItsColumn() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let web = try await s.get("/api/v1/selectors/preview?selector=" + Self.query(#"role == "web""#), token: s.viewer)
            #expect(web.status == .ok && web["matches"] as? Int == 2)
            #expect((web["hosts"] as? [[String: Any]])?.map { $0["hostname"] as? String } == ["web-1", "web-2"])
            let bad = try await s.get("/api/v1/selectors/preview?selector=" + Self.query(#"role == web"#), token: s.viewer)
            #expect(bad.status == .badRequest && bad.field == "selector" && bad.error?.hasPrefix("column 9") == true, "\(bad.text)")
            #expect(try await s.get("/api/v1/selectors/preview", token: s.viewer).field == "selector")
            let page = try await s.get("/api/v1/hosts?selector=" + Self.query(#"role == "web""#) + "&limit=1&offset=1", token: s.viewer)
            #expect(page["total"] as? Int == 2 && page.items.map { $0["hostname"] as? String } == ["web-2"])
            for query in ["limit=0", "limit=1001", "offset=-1", "limit=x"] {
                #expect(try await s.get("/api/v1/hosts?\(query)", token: s.viewer).status == .badRequest, "\(query)")
            }
            let names = { (query: String) in try await s.get("/api/v1/hosts?" + query, token: s.viewer).items.map { $0["hostname"] as? String ?? "" } }
            let ascending = try await names("sort=hostname")
            #expect(ascending.count > 2 && ascending == ascending.sorted())
            #expect(try await names("sort=hostname&order=desc") == ascending.reversed())
            #expect(try await names("sort=hostname&order=desc&limit=1&offset=1") == [ascending[ascending.count - 2]])
            // Policy sync is worked out per host, not a column the store sorts by.
            for (query, field) in [("sort=sync", "sort"), ("sort=", "sort"), ("order=up", "order")] {
                let refused = try await s.get("/api/v1/hosts?\(query)", token: s.viewer)
                #expect(refused.status == .badRequest && refused.field == field, "\(query): \(refused.text)")
            }
        }
    }

    @Test func aReviewSaysPerHostWhatWouldBeRejected() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let lossy = try await s.post("/api/v1/reviews", token: s.viewer, TestServer.object(["content": Self.nothing]))
            #expect(lossy.status == .ok, "\(lossy.text)")
            let hosts = lossy["hosts"] as? [[String: Any]] ?? []
            #expect(hosts.map { $0["hostname"] as? String } == ["web-1", "web-2"], "the file's appliesTo picks the hosts")
            #expect(hosts.map { $0["rejected_count"] as? Int } == [1, 0])
            let clean = try await s.post("/api/v1/reviews", token: s.viewer, TestServer.object(["content": Self.webOnly]))
            #expect((clean["hosts"] as? [[String: Any]])?.allSatisfy { $0["rejected_count"] as? Int == 0 } == true)
            for (body, field) in [(["content": "networks:\n"], "selector"), (["content": "nonsense: [", "selector": "all()"], "content"),
                                  (["content": Self.webOnly, "selector": #"role == "none""#], "selector"), (["content": Self.webOnly, "since": "soon"], "since")] {
                let reply = try await s.post("/api/v1/reviews", token: s.viewer, TestServer.object(body))
                #expect([.badRequest, .unprocessableContent].contains(reply.status) && reply.field == field, "\(body): \(reply.text)")
            }
        }
    }

    @Test func approvalNeedsTheApproverRoleAndStoresNumberedVersions() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let approver = try await s.stores.tokens.create(name: "apollo", role: .approver).token
            let body = TestServer.object(["content": Self.webOnly])
            #expect(try await s.post("/api/v1/rulesets/web/versions", token: s.responder, body).status == .forbidden)
            let misnamed = try await s.post("/api/v1/rulesets/other/versions", token: approver, body)
            #expect(misnamed.status == .unprocessableContent && misnamed.field == "content")
            let first = try await s.post("/api/v1/rulesets/web/versions", token: approver, body)
            #expect(first.status == .created && first["version"] as? Int == 1, "\(first.text)")
            #expect((first["review"] as? [String: Any])?["hosts"] as? Int == 2)
            let second = try await s.post("/api/v1/rulesets/web/versions", token: approver, body)
            #expect(second["version"] as? Int == 2)
            let shown = try await s.get("/api/v1/rulesets/web/versions/1", token: s.viewer)
            #expect(shown["content"] as? String == Self.webOnly && shown["sha256"] as? String == ContentDigest.hex(Self.webOnly))
            #expect(try await s.get("/api/v1/rulesets/web/versions/9", token: s.viewer).status == .notFound)
            #expect(try await s.get("/api/v1/rulesets/Web!/versions/1", token: s.viewer).field == "name")
        }
    }

    @Test func anAssignmentGivesMatchingHostsAnEffectivePolicyThatWaitsForARollout() async throws {
        try await withServer { s in
            let hosts = try await Self.fleet(s)
            let approver = try await s.stores.tokens.create(name: "apollo", role: .approver).token
            #expect(try await s.post("/api/v1/rulesets/web/versions", token: approver, TestServer.object(["content": Self.webOnly])).status == .created)
            let unknown = try await s.post("/api/v1/assignments", token: approver, #"{"ruleset":"nope","selector":"all()"}"#)
            #expect(unknown.status == .unprocessableContent && unknown.field == "ruleset")
            let nobody = try await s.post("/api/v1/assignments", token: approver, #"{"ruleset":"web","selector":"has(nothing)"}"#)
            #expect(nobody.status == .unprocessableContent && nobody.field == "selector")
            let assigned = try await s.post("/api/v1/assignments", token: approver, TestServer.object(["ruleset": "web", "selector": #"role == "web""#]))
            #expect(assigned.status == .created && assigned["hosts"] as? Int == 2 && assigned["version"] is NSNull && assigned["resolved_version"] as? Int == 1)
            let web = try await s.get("/api/v1/hosts/\(hosts.web1)", token: s.viewer)
            let policy = web["policy"] as? [String: Any]
            let effective = policy?["assigned"] as? [String: Any]
            #expect(effective?["digest"] as? String == ContentDigest.hex(effective?["content"] as? String ?? ""))
            #expect((effective?["sources"] as? [[String: Any]])?.first?["rule"] as? String == "outgoing to web")
            // Assigned, not in the host's document: nothing to apply until a rollout.
            #expect(policy?["desired_digest"] is NSNull)
            #expect(s.db.tables.withLock { $0.hosts[UUID(uuidString: hosts.web1)!]?.desired.policy } == nil)
            let db = try await s.get("/api/v1/hosts/\(hosts.db)", token: s.viewer)
            #expect((db["policy"] as? [String: Any])?["assigned"] is NSNull)
            // Retagging moves a host in: its policy follows at once.
            _ = try await s.call(.patch, "/api/v1/hosts/\(hosts.db)/tags", token: s.admin, body: #"{"set":{"role":"web"}}"#)
            #expect(((try await s.get("/api/v1/hosts/\(hosts.db)", token: s.viewer))["policy"] as? [String: Any])?["assigned"] is [String: Any])
            let id = try #require(assigned["id"] as? String)
            #expect(try await s.call(.delete, "/api/v1/assignments/\(id)", token: s.viewer).status == .forbidden)
            #expect(try await s.call(.delete, "/api/v1/assignments/\(id)", token: approver).status == .ok)
            #expect(try await s.call(.delete, "/api/v1/assignments/\(id)", token: approver).status == .notFound)
            #expect(((try await s.get("/api/v1/hosts/\(hosts.web1)", token: s.viewer))["policy"] as? [String: Any])?["assigned"] is NSNull)
        }
    }

    @Test func aProposalMergesTheTiersRecordWithCoverage() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let standard = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("Rulesets/standard-networks.yaml"), encoding: .utf8)
            func propose(_ coverage: Int) async throws -> TestServer.Reply {
                try await s.post("/api/v1/proposals", token: s.viewer,
                                 TestServer.object(["selector": #"role == "web""#, "min_coverage": coverage, "standard_networks": standard]))
            }
            let half = try await propose(50)
            #expect(half.status == .ok && half["hosts"] as? Int == 2 && half["candidates"] as? Int == 1 && half["outliers"] as? Int == 0, "\(half.text)")
            #expect((half["text"] as? String)?.contains("seen on 1 of 2 hosts") == true)
            let most = try await propose(60)
            #expect(most["candidates"] as? Int == 0 && most["outliers"] as? Int == 1)
            #expect((most["text"] as? String)?.contains("#   web-1: outbound tcp/443") == true, "\(most.text)")
            let bad = try await s.post("/api/v1/proposals", token: s.viewer,
                                       TestServer.object(["selector": "all()", "min_coverage": 0, "standard_networks": standard]))
            #expect(bad.status == .unprocessableContent && bad.field == "min_coverage")
        }
    }

    static func query(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
