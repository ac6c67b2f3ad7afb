import CordonServer
import CordonWire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Testing

/// The console's routes in process: sign-in to a cookie, the CSRF token, the headers its files
/// are served with, and the dependency map's endpoints.
@Suite struct ConsoleRouteTests {
    /// Signs in with `token`: the cookie's `name=value` and the CSRF token.
    static func signIn(_ s: TestServer, _ token: String) async throws -> (cookie: String, csrf: String, reply: TestServer.Reply) {
        let reply = try await s.post("/api/v1/session", token: nil, TestServer.object(["token": token]))
        guard reply.status == .created, let set = reply.headers[.setCookie], let csrf = reply["csrf_token"] as? String else {
            throw Failure("sign-in answered \(reply.status): \(reply.text)")
        }
        return (String(set.split(separator: ";")[0]), csrf, reply)
    }

    static func withCookie(_ cookie: String, csrf: String? = nil) -> HTTPFields {
        var headers: HTTPFields = [.cookie: cookie]
        if let csrf { headers[HTTPField.Name("X-CSRF-Token")!] = csrf }
        return headers
    }

    @Test func signInSetsAStrictHttpOnlySecureCookieAndTheSessionActsForItsToken() async throws {
        try await withServer { s in
            let (cookie, csrf, reply) = try await Self.signIn(s, s.viewer)
            let set = try #require(reply.headers[.setCookie])
            #expect(cookie.hasPrefix("__Host-cordon-session=cordon_session_"))
            for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
                #expect(set.contains(attribute), "Set-Cookie lacks \(attribute): \(set)")
            }
            #expect(!set.contains("Domain"), "a __Host- cookie names no domain")
            #expect(reply["role"] as? String == "viewer")
            #expect(reply["name"] as? String == "victor")
            #expect(!reply.text.contains(String(cookie.split(separator: "=")[1])), "the cookie's secret is never in a body")

            // The cookie alone reads; the session read back gives the same CSRF token.
            let hosts = try await s.call(.get, "/api/v1/hosts", token: nil, headers: Self.withCookie(cookie))
            #expect(hosts.status == .ok)
            let session = try await s.call(.get, "/api/v1/session", token: nil, headers: Self.withCookie(cookie))
            #expect(session.status == .ok)
            #expect(session["csrf_token"] as? String == csrf)
            // A bearer token has no session to show.
            #expect(try await s.get("/api/v1/session", token: s.viewer).status == .notFound)
            let audit = try await s.get("/api/v1/audit", token: s.admin)
            #expect(audit.items.contains { $0["action"] as? String == "console sign-in" && $0["actor"] as? String == "victor" })
        }
    }

    @Test func aBadTokenIsRefusedAndAuditedAndGetsNoCookie() async throws {
        try await withServer { s in
            for token in ["cordon_api_nope", "not-a-token", ""] {
                let reply = try await s.post("/api/v1/session", token: nil, TestServer.object(["token": token]))
                #expect(reply.status == .unauthorized, "\(token)")
                #expect(reply.field == "token")
                #expect(reply.headers[.setCookie] == nil)
            }
            // A form posting text/plain that happens to parse as JSON is not a sign-in.
            let form = try await s.call(.post, "/api/v1/session", token: nil, body: TestServer.object(["token": s.viewer]),
                                        headers: [.contentType: "text/plain"])
            #expect(form.status == .unsupportedMediaType)
            #expect(form.headers[.setCookie] == nil)
            let missing = try await s.post("/api/v1/session", token: nil, "{}")
            #expect(missing.status == .badRequest)
            #expect(missing.field == "token")
            let audit = try await s.get("/api/v1/audit", token: s.admin)
            #expect(audit.items.filter { $0["action"] as? String == "sign-in refused" }.count == 1, "a malformed token is refused before lookup; a well-formed unknown one is audited")
        }
    }

    @Test func aStateChangeNeedsTheCSRFTokenAndTheRole() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let body = TestServer.object(["state": "isolated", "reason": "console test"])
            let responder = try await Self.signIn(s, s.responder)
            // No token, a wrong one: 403, and nothing was asked of the host.
            for headers in [Self.withCookie(responder.cookie), Self.withCookie(responder.cookie, csrf: "cordon_csrf_wrong")] {
                let forged = try await s.call(.post, "/api/v1/hosts/\(host.id)/isolation", token: nil, body: body, headers: headers)
                #expect(forged.status == .forbidden)
                #expect(forged.field == "X-CSRF-Token")
            }
            #expect(try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer).isolation?["desired"] as? String == "released")
            // Another session's token is not this one's.
            let other = try await Self.signIn(s, s.admin)
            let crossed = try await s.call(.post, "/api/v1/hosts/\(host.id)/isolation", token: nil, body: body,
                                           headers: Self.withCookie(responder.cookie, csrf: other.csrf))
            #expect(crossed.status == .forbidden)

            let done = try await s.call(.post, "/api/v1/hosts/\(host.id)/isolation", token: nil, body: body,
                                        headers: Self.withCookie(responder.cookie, csrf: responder.csrf))
            #expect(done.status == .accepted || done.status == .ok, "\(done.status): \(done.text)")
            #expect(try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer).isolation?["desired"] as? String == "isolated")
            let audit = try await s.get("/api/v1/audit", token: s.admin)
            #expect(audit.items.contains { $0["actor"] as? String == "rita" && ($0["action"] as? String ?? "").contains("isolat") })

            // A viewer's session with a good CSRF token is still a viewer.
            let viewer = try await Self.signIn(s, s.viewer)
            let refused = try await s.call(.post, "/api/v1/hosts/\(host.id)/isolation", token: nil,
                                           body: TestServer.object(["state": "released", "reason": "x"]),
                                           headers: Self.withCookie(viewer.cookie, csrf: viewer.csrf))
            #expect(refused.status == .forbidden)
            #expect(refused.error?.contains("responder") == true)
        }
    }

    @Test func signingOutOrRevokingTheTokenEndsTheSession() async throws {
        try await withServer { s in
            let first = try await Self.signIn(s, s.viewer)
            let noCSRF = try await s.call(.delete, "/api/v1/session", token: nil, headers: Self.withCookie(first.cookie))
            #expect(noCSRF.status == .forbidden, "signing out is a state change too")
            let out = try await s.call(.delete, "/api/v1/session", token: nil, headers: Self.withCookie(first.cookie, csrf: first.csrf))
            #expect(out.status == .ok)
            #expect(out.headers[.setCookie]?.contains("Max-Age=0") == true)
            #expect(try await s.call(.get, "/api/v1/hosts", token: nil, headers: Self.withCookie(first.cookie)).status == .unauthorized)

            let second = try await Self.signIn(s, s.viewer)
            #expect(try await s.stores.tokens.revoke("victor") == 1)
            let after = try await s.call(.get, "/api/v1/hosts", token: nil, headers: Self.withCookie(second.cookie))
            #expect(after.status == .unauthorized)
            // A cookie that is no session at all.
            #expect(try await s.call(.get, "/api/v1/hosts", token: nil, headers: [.cookie: "__Host-cordon-session=cordon_session_x"]).status == .unauthorized)
        }
    }

    @Test func anExpiredSessionIsRefused() async throws {
        try await withServer { s in
            let signed = try await Self.signIn(s, s.viewer)
            s.db.tables.withLock { t in for key in t.sessions.keys { t.sessions[key]!.expires = Date().addingTimeInterval(-1) } }
            let reply = try await s.call(.get, "/api/v1/hosts", token: nil, headers: Self.withCookie(signed.cookie))
            #expect(reply.status == .unauthorized)
            #expect(reply.error?.contains("expired") == true)
        }
    }

    @Test func theConsoleIsServedWithAStrictContentSecurityPolicy() async throws {
        try await withServer { s in
            let root = try await s.get("/", token: nil)
            #expect(root.status == .seeOther)
            #expect(root.headers[.location] == "/console/")
            for (path, type) in [("/console/", "text/html"), ("/console", "text/html"), ("/console/app.js", "text/javascript"),
                                 ("/console/logic.js", "text/javascript"), ("/console/console.css", "text/css")] {
                let reply = try await s.get(path, token: nil)
                #expect(reply.status == .ok, "\(path)")
                #expect(reply.headers[.contentType]?.hasPrefix(type) == true, "\(path)")
                let policy = try #require(reply.headers[.contentSecurityPolicy], "\(path)")
                #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && !policy.contains("unsafe"), "\(policy)")
                #expect(policy.contains("frame-ancestors 'none'"))
                #expect(reply.headers[.xContentTypeOptions] == "nosniff")
                let etag = try #require(reply.headers[.eTag])
                let again = try await s.call(.get, path, token: nil, headers: [.ifNoneMatch: etag])
                #expect(again.status == .notModified)
            }
            let page = try await s.get("/console/", token: nil)
            #expect(!page.text.contains("<script>") && !page.text.contains("style="), "no inline script or style: the policy would block it")
            #expect(!page.text.contains("http://") && !page.text.contains("https://"), "no file from elsewhere")
            #expect(try await s.get("/console/../openapi.json", token: nil).status != .ok)
            #expect(try await s.get("/console/nothing.js", token: nil).status == .notFound)
        }
    }

    @Test func noConsoleScriptWritesMarkup() async throws {
        // What hosts send is rendered as text: no script may parse strings as HTML.
        for name in ["app.js", "api.js", "dom.js", "logic.js", "fleet.js", "host.js", "map.js", "policy.js"] {
            try await withServer { s in
                let text = try await s.get("/console/\(name)", token: nil).text
                #expect(!text.isEmpty)
                for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser"] {
                    #expect(!text.contains(sink), "\(name) uses \(sink)")
                }
            }
        }
    }
}

/// `/api/v1/map` and `/api/v1/map/flows` on a small fleet with east-west, Somewhere, named
/// and rejected traffic.
@Suite struct MapRouteTests {
    /// Two web hosts (one enforcing) and a database host; web-1 talks to the database, to a
    /// named service and to somewhere, and refused an inbound probe.
    static func fleet(_ s: TestServer) async throws -> (web1: String, web2: String, db: String) {
        let web1 = try await s.enroll(hostname: "web-1", addresses: ["192.0.2.11"], tags: ["tier": "web"])
        let web2 = try await s.enroll(hostname: "web-2", addresses: ["192.0.2.12"], tags: ["tier": "web"])
        let db = try await s.enroll(hostname: "db-1", addresses: ["192.0.2.20"], tags: ["tier": "db"])
        func report(_ host: (id: String, credential: String), address: String, enforcing: Bool, _ flows: [[String: Any]]) async throws {
            var text = TestServer.report(flows: flows.map { var f = $0; f["local_address"] = address; return f })
            text = text.replacingOccurrences(of: "\"192.0.2.10\"", with: "\"\(address)\"")
            if enforcing { text = text.replacingOccurrences(of: "\"mode\":\"discovery\"", with: "\"mode\":\"enforce\"") }
            let reply = try await s.post("/agent/v1/report", token: host.credential, text)
            #expect(reply.status == .ok, "\(reply.text)")
        }
        try await report(web1, address: "192.0.2.11", enforcing: true, [
            TestServer.flow(remote: "192.0.2.20", ["remote_port": 5432, "connections": 40]),
            TestServer.flow(remote: "203.0.113.80", ["connections": 7, "remote_names": ["api.example.com"]]),
            TestServer.flow(remote: "198.51.100.7", ["connections": 3]),
            TestServer.flow(remote: "198.51.100.66", ["direction": "inbound", "local_port": 23, "remote_port": NSNull(), "verdict": "rejected", "connections": 2]),
        ])
        try await report(web2, address: "192.0.2.12", enforcing: false, [
            TestServer.flow(remote: "198.51.100.8", ["connections": 5]),
        ])
        // The database's side of web-1's connections: the same edge, not a second one.
        try await report(db, address: "192.0.2.20", enforcing: false, [
            TestServer.flow(remote: "192.0.2.11", ["direction": "inbound", "local_port": 5432, "remote_port": NSNull(), "connections": 40]),
        ])
        return (web1.id, web2.id, db.id)
    }

    @Test func theMapGroupsHostsAndColoursEdgesByState() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let reply = try await s.get("/api/v1/map?group=tier", token: s.viewer)
            #expect(reply.status == .ok, "\(reply.text)")
            let nodes = try #require(reply["nodes"] as? [[String: Any]])
            let edges = try #require(reply["edges"] as? [[String: Any]])
            let ids = Set(nodes.compactMap { $0["id"] as? String })
            #expect(ids.isSuperset(of: ["group:tier=web", "group:tier=db", "name:api.example.com", "somewhere:outbound tcp/443",
                                        "somewhere:inbound tcp/23"]), "\(ids)")
            #expect(nodes.first { $0["id"] as? String == "group:tier=web" }?["hosts"] as? Int == 2)
            func edge(_ from: String, _ to: String) -> [[String: Any]] { edges.filter { $0["from"] as? String == from && $0["to"] as? String == to } }
            let eastWest = edge("group:tier=web", "group:tier=db")
            #expect(eastWest.count == 1, "both ends' reports make one edge: \(eastWest)")
            #expect(eastWest.first?["state"] as? String == "allowed")
            #expect(eastWest.first?["connections"] as? Int == 40)
            #expect(eastWest.first?["service"] as? String == "tcp/5432")
            // web-1 enforces (allowed), web-2 discovers: two states to the same Somewhere.
            #expect(Set(edge("group:tier=web", "somewhere:outbound tcp/443").compactMap { $0["state"] as? String }) == ["allowed", "discovered"])
            let probe = edge("somewhere:inbound tcp/23", "group:tier=web")
            #expect(probe.first?["state"] as? String == "rejected")
            #expect(reply["group_by"] as? String == "tier")
            // Positions are the server's, and the same request gives the same picture (`since`
            // moves with the clock between the two requests; the picture does not).
            let again = try await s.get("/api/v1/map?group=tier", token: s.viewer)
            let picture = { (r: TestServer.Reply) in
                try JSONSerialization.data(withJSONObject: ["nodes": r["nodes"] ?? NSNull(), "edges": r["edges"] ?? NSNull()], options: [.sortedKeys])
            }
            #expect(try picture(again) == picture(reply))
            #expect((reply["nodes"] as? [[String: Any]])?.contains { ($0["x"] as? Double ?? 0) != 0 } == true, "the nodes have positions")
        }
    }

    @Test func oneHostsMapAndAnEdgesFlowsPaged() async throws {
        try await withServer { s in
            let hosts = try await Self.fleet(s)
            let reply = try await s.get("/api/v1/map?host=\(hosts.web1)", token: s.viewer)
            #expect(reply.status == .ok)
            let edges = try #require(reply["edges"] as? [[String: Any]])
            let rejected = try #require(edges.first { $0["state"] as? String == "rejected" })
            let id = try #require(rejected["id"] as? String)
            var allowed = CharacterSet.alphanumerics
            allowed.insert(charactersIn: "-._~")
            let edgeQuery = id.addingPercentEncoding(withAllowedCharacters: allowed)!
            let flows = try await s.get("/api/v1/map/flows?host=\(hosts.web1)&edge=\(edgeQuery)", token: s.viewer)
            #expect(flows.status == .ok, "\(flows.text)")
            #expect(flows["total"] as? Int == 1)
            let flow = try #require(flows.items.first?["flow"] as? [String: Any])
            #expect(flow["remote_address"] as? String == "198.51.100.66")
            #expect(flows.items.first?["hostname"] as? String == "web-1")

            let all = try await s.get("/api/v1/map?group=tier", token: s.viewer)
            let somewhere = try #require((all["edges"] as? [[String: Any]])?.first {
                $0["to"] as? String == "somewhere:outbound tcp/443" && $0["state"] as? String == "allowed" })
            let paged = try await s.get("/api/v1/map/flows?group=tier&limit=1&offset=0&edge=\((somewhere["id"] as! String).addingPercentEncoding(withAllowedCharacters: allowed)!)",
                                        token: s.viewer)
            #expect(paged["total"] as? Int == 1)
            #expect(paged.items.count == 1)
        }
    }

    @Test func whatAnAssignedPolicyWouldRejectIsAmberUntilItIsInForce() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let approver = try await s.stores.tokens.create(name: "apollo", role: .approver).token
            let ruleset = """
                name: web
                appliesTo: 'tier == "web"'
                networks:
                  - name: db
                    entries: [192.0.2.20]
                    services: [tcp/5432]
                outgoing:
                  - to: db
                """
            #expect(try await s.post("/api/v1/rulesets/web/versions", token: approver, TestServer.object(["content": ruleset])).status == .created)
            #expect(try await s.post("/api/v1/assignments", token: approver, TestServer.object(["ruleset": "web", "selector": #"tier == "web""#])).status == .created)
            let reply = try await s.get("/api/v1/map?group=tier", token: s.viewer)
            let edges = try #require(reply["edges"] as? [[String: Any]])
            func states(_ to: String) -> Set<String> {
                Set(edges.filter { $0["from"] as? String == "group:tier=web" && $0["to"] as? String == to }.compactMap { $0["state"] as? String })
            }
            #expect(states("group:tier=db") == ["allowed"], "the policy allows the database")
            #expect(states("somewhere:outbound tcp/443") == ["pending"], "both web hosts' https would be rejected: \(edges)")
            #expect(states("name:api.example.com") == ["pending"])
            // A rejected flow stays red: it is refused now, whatever comes.
            #expect(edges.contains { $0["to"] as? String == "group:tier=web" && $0["state"] as? String == "rejected" })
        }
    }

    @Test func theEdgeTableListsEveryEdgeBusiestFirstWithItsEndsLabelled() async throws {
        try await withServer { s in
            _ = try await Self.fleet(s)
            let map = try await s.get("/api/v1/map?group=tier", token: s.viewer)
            let drawn = try #require(map["edges"] as? [[String: Any]])
            let table = try await s.get("/api/v1/map/edges?group=tier&limit=500", token: s.viewer)
            #expect(table.status == .ok && table["total"] as? Int == drawn.count, "\(table.text)")
            let connections = table.items.compactMap { $0["connections"] as? Int }
            #expect(connections.count == drawn.count && connections == connections.sorted(by: >), "\(connections)")
            #expect(Set(table.items.compactMap { $0["id"] as? String }) == Set(drawn.compactMap { $0["id"] as? String }))
            let probe = try #require(table.items.first { $0["state"] as? String == "rejected" })
            #expect(probe["from_label"] as? String == "from somewhere tcp/23" && probe["to_label"] as? String == "tier=web", "\(probe)")
            #expect(drawn.allSatisfy { $0["from_label"] == nil }, "the map's own edges carry no labels: its nodes do")
            let second = try await s.get("/api/v1/map/edges?group=tier&limit=1&offset=1", token: s.viewer)
            #expect(second.items.map { $0["id"] as? String } == [table.items[1]["id"] as? String] && second["total"] as? Int == drawn.count)
            for (query, field) in [("limit=0", "limit"), ("offset=-1", "offset"), ("window=9d", "window")] {
                #expect(try await s.get("/api/v1/map/edges?\(query)", token: s.viewer).field == field, "\(query)")
            }
        }
    }

    @Test func badMapQueriesNameTheirField() async throws {
        try await withServer { s in
            for (query, field) in [("window=2w", "window"), ("host=nope", "host"), ("selector=(((", "selector"), ("group=a%20b", "group"),
                                   ("host=\(UUID().uuidString)&selector=has(tier)", "host")] {
                let reply = try await s.get("/api/v1/map?\(query)", token: s.viewer)
                #expect(reply.status == .badRequest, "\(query): \(reply.status) \(reply.text)")
                #expect(reply.field == field, "\(query)")
            }
            let unknown = try await s.get("/api/v1/map?host=\(UUID().uuidString)", token: s.viewer)
            #expect(unknown.status == .notFound)
            for query in ["", "edge=a|b|c|d", "edge=a|b|c|rejected&limit=0"] {
                let reply = try await s.get("/api/v1/map/flows?\(query)", token: s.viewer)
                #expect(reply.status == .badRequest, "\(query)")
            }
            #expect(try await s.get("/api/v1/map", token: nil).status == .unauthorized)
        }
    }
}

/// The console's live updates: which host or rollout changed, from the stores.
@Suite struct FleetEventsTests {
    @Test func aChangedHostIsAnnouncedAndAnUnchangedOneIsNot() async throws {
        try await withServer { s in
            let host = try await s.enroll(hostname: "web-1")
            let quiet = try await s.enroll(hostname: "web-2")
            let events = FleetEvents(stores: s.stores, logger: Logger(label: "test"), period: .milliseconds(20))
            let stream = await events.listen()
            // Past the first look (the baseline, however slow the machine), then a change.
            for _ in 0..<1000 where await events.looks == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await events.looks > 0, "the watcher looked within 10 s")
            #expect(try await s.isolate(host.id).status == .accepted)
            // Bounded: the stream ends after 10 s whether or not the event came.
            let received = await withTaskGroup(of: String?.self) { group in
                group.addTask {
                    var received = ""
                    for await text in stream {
                        received += text
                        if received.contains("event: host") { break }
                    }
                    return received
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(10))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first ?? "(nothing within 10 s)"
            }
            #expect(received.contains("event: host\ndata: {\"id\":\"\(host.id)\"}\n\n"), "\(received)")
            #expect(!received.contains(quiet.id), "an unchanged host is not announced")
        }
    }
}
