import CordonCore
import CordonLab
import CordonStore
import CordonWire
import Foundation
import Testing

/// A query parameter as `cordon fleet` sends it.
enum FleetClientQuery {
    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
#if canImport(Glibc)
import Glibc
#endif

/// The fleet: a real cordon-server over HTTPS with a throwaway PostgreSQL cluster in the server
/// namespace, real agents in host namespaces (`FleetScenario`).
@Suite(.serialized) struct FleetTests {
    typealias F = FleetScenario

    /// The scenario with the server running and host a's agent enrolled and connected.
    struct Setup {
        let lab: Lab
        let fleet: FleetScenario
        var server: Child
        var agent: Child?
        let responder: String
        let viewer: String

        init(agentA: Bool = true, serverExtra: [String] = [], agentExtra: [String] = [], serverPrefix: [String] = [], replicated: Bool = false) throws {
            lab = try Lab()
            do {
                fleet = try FleetScenario(lab: lab, replicated: replicated)
                server = try fleet.startServer(extra: serverExtra, prefix: serverPrefix)
                responder = try fleet.token(role: "responder", name: "rita")
                viewer = try fleet.token(role: "viewer", name: "vic")
                if agentA {
                    agent = try fleet.startAgent(fleet.a, secretFile: try fleet.enrollSecret(tags: "tier=web"), extra: agentExtra)
                    _ = try hostID(timeout: 15)
                }
            } catch {
                lab.cleanup()
                throw error
            }
        }

        func json(_ text: String) throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { throw LabError("not an object: \(text)") }
            return object
        }

        func hosts() throws -> [[String: Any]] {
            let answer = try fleet.api("GET", "/api/v1/hosts", token: viewer)
            guard answer.status == 200, let items = try json(answer.body)["items"] as? [[String: Any]] else { throw LabError("hosts: \(answer)") }
            return items
        }

        /// The id of the host named after namespace a, once enrolled and reporting.
        func hostID(timeout: Double, connected: Bool = true) throws -> String {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let host = try hosts().first(where: { $0["mode"] is String && (!connected || $0["connected"] as? Bool == true) }),
                   let id = host["id"] as? String { return id }
                usleep(100_000)
            }
            throw LabError("no host reported within \(timeout) s:\n\(agentLog)")
        }

        func host(_ id: String) throws -> [String: Any] {
            let answer = try fleet.api("GET", "/api/v1/hosts/\(id)", token: viewer)
            guard answer.status == 200 else { throw LabError("host \(id): \(answer)") }
            return try json(answer.body)
        }

        func intent(_ id: String) throws -> [String: Any] {
            let answer = try fleet.api("GET", "/api/v1/intents/\(id)", token: viewer)
            guard answer.status == 200 else { throw LabError("intent \(id): \(answer)") }
            return try json(answer.body)
        }

        /// POSTs an isolation request; the 202's body.
        func request(_ host: String, _ state: String, reason: String = "test", token: String? = nil, key: String? = nil) throws -> [String: Any] {
            let body = #"{"state":"\#(state)","reason":"\#(reason)"}"#
            let answer = try fleet.api("POST", "/api/v1/hosts/\(host)/isolation", token: token ?? responder, body: body,
                                       headers: key.map { ["Idempotency-Key: \($0)"] } ?? [])
            guard answer.status == 202 else { throw LabError("isolation request: \(answer)") }
            return try json(answer.body)
        }

        /// Polls an intent until it leaves pending; its final view.
        func settle(_ intent: String, timeout: Double) throws -> [String: Any] {
            let deadline = Date().addingTimeInterval(timeout)
            var view = try self.intent(intent)
            while view["status"] as? String == "pending" && Date() < deadline {
                usleep(50_000)
                view = try self.intent(intent)
            }
            return view
        }

        /// Waits until the server has heard from host `id` in a later second than `instant` (its
        /// `last_seen` has whole seconds), so what it proves happened after `instant`.
        func seen(_ id: String, after instant: Date, timeout: Double) throws -> Bool {
            let parser = ISO8601DateFormatter()
            let deadline = Date().addingTimeInterval(timeout)
            let bar = instant.timeIntervalSince1970.rounded(.down) + 1
            while Date() < deadline {
                if let text = try host(id)["last_seen"] as? String, let seen = parser.date(from: text), seen.timeIntervalSince1970 >= bar { return true }
                usleep(200_000)
            }
            return false
        }

        var agentLog: String { (try? String(contentsOfFile: fleet.directory(of: fleet.a) + "/agent.log", encoding: .utf8)) ?? "" }

        /// A TCP connection from host a to the web service, accepted within a second.
        func webReachable() throws -> Bool {
            try lab.run(fleet.a, ["socat", "-u", "OPEN:/dev/null", "TCP4:\(F.web):443,connect-timeout=1"], timeout: 5).succeeded
        }

        func status(_ host: String) throws -> [String: Any] {
            let dir = fleet.directory(of: host)
            let result = try lab.run(nil, [fleet.cordonBinary, "status", "--json", "--socket", dir + "/cordon.sock"])
            guard result.succeeded else { throw LabError("status: \(result.stderr)") }
            return try json(result.stdout)
        }
    }

    static var shouldRun: Bool { Integration.shouldRun && (Integration.required || PostgresCluster.binaries() != nil) }

    @Test("an agent enrolls with a secret, reports its facts and tags, and keeps its credential across restarts")
    func enrollment() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let host = try setup.host(id)
        #expect(host["tags"] as? [String: String] == ["tier": "web"])
        #expect((host["addresses"] as? [String])?.contains(F.hostA) == true)
        #expect(host["mode"] as? String == "discovery")
        #expect(host["connected"] as? Bool == true)
        let isolation = host["isolation"] as? [String: Any]
        #expect(isolation?["desired"] as? String == "released")
        #expect(isolation?["pending_since"] is NSNull, "every field is present, null when empty")
        // The server is part of the management channel, without being configured as a collector.
        let status = try setup.status(setup.fleet.a)
        #expect((status["management"] as? String)?.contains("collector \(F.serverA):\(F.port)") == true, "\(status)")
        #expect((status["fleet"] as? [String: Any])?["host_id"] as? String == id)

        // Restarted without the secret: the same host, from its own credential.
        setup.lab.stop(setup.agent!)
        let restarted = Date()
        setup.agent = try setup.fleet.startAgent(setup.fleet.a, secretFile: nil)
        #expect(try setup.seen(id, after: restarted, timeout: 15), "the restarted agent reported as the same host\n\(setup.agentLog)")
        #expect(try setup.hosts().count == 1, "no second enrollment")

        // The API's description: served without a token, the file the source holds (Docs/openapi.json links to it).
        let served = try setup.fleet.api("GET", "/api/v1/openapi.json", token: nil)
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/CordonServer/openapi.json")
        let documented = try String(contentsOf: docs, encoding: .utf8)
        #expect(served.status == 200 && served.body + "\n" == documented, "the served document is the file in the source")
        let paths = try #require(try setup.json(served.body)["paths"] as? [String: Any])
        for route in ["/api/v1/hosts", "/api/v1/hosts/{id}", "/api/v1/hosts/{id}/isolation", "/api/v1/intents", "/api/v1/intents/{id}/cancel",
                      "/api/v1/hosts/{id}/log", "/api/v1/hosts/{id}/flows", "/agent/v1/enroll", "/agent/v1/state", "/agent/v1/desired", "/agent/v1/report"] {
            #expect(paths[route] != nil, "\(route) is described")
        }

        // A used-up secret admits nobody.
        let single = try setup.fleet.enrollSecret(uses: 1)
        #expect(try setup.fleet.enroll(secretFile: single, hostname: "x").status == 201)
        let again = try setup.fleet.enroll(secretFile: single, hostname: "x")
        #expect(again.status == 403 && again.body.contains("secret"), "\(again)")
    }

    @Test("the server's metrics: requests by route pattern, reports, connected agents, intents by status, the database; neither its JSON logs nor the agent's carry a secret or a token")
    func serverMetricsAndLogs() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        // The test cluster trusts every local connection, so a password in the URL is accepted and
        // ignored: there only to be looked for in the logs (the last --database given wins).
        let password = "pw-\(UInt32.random(in: 0...UInt32.max))-never-logged"
        let setup = try Setup(serverExtra: ["--metrics", "127.0.0.1:9465", "--log-format", "json", "--log-level", "info",
                                            "--database", "postgresql://postgres:\(password)@127.0.0.1:5432/postgres"],
                              agentExtra: ["--log-format", "json"])
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 15)
        let isolate = try setup.request(id, "isolated", reason: "metrics test")
        #expect(try setup.settle(try #require(isolate["intent_id"] as? String), timeout: 10)["status"] as? String == "succeeded")
        let release = try setup.request(id, "released", reason: "metrics test")
        #expect(try setup.settle(try #require(release["intent_id"] as? String), timeout: 20)["status"] as? String == "succeeded")
        _ = try setup.host(id)

        let scraped = try setup.lab.run(setup.fleet.server, ["curl", "-sS", "--fail", "--max-time", "5", "http://127.0.0.1:9465/metrics"])
        #expect(scraped.succeeded, "\(scraped.stderr)")
        let text = scraped.stdout
        func sample(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(sample("cordon_server_agents_enrolled") == 1)
        #expect(sample("cordon_server_agents_connected") == 1)
        #expect(sample("cordon_server_intents{status=\"succeeded\"}") == 2)
        #expect(sample("cordon_server_intents{status=\"pending\"}") == 0)
        #expect((sample("cordon_server_reports_total") ?? 0) >= 1)
        #expect(sample("cordon_server_database_up") == 1)
        #expect((sample("cordon_server_database_round_trip_seconds") ?? 0) > 0)
        let requests = text.split(separator: "\n").filter { $0.hasPrefix("cordon_server_http_requests_total{") }
        #expect(requests.contains { $0.contains("route=\"/agent/v1/report\"") && $0.contains("method=\"POST\"") && $0.contains("status=\"200\"") },
                "\(requests)")
        #expect(requests.contains { $0.contains("route=\"/api/v1/hosts/{id}/isolation\"") && $0.contains("status=\"202\"") }, "\(requests)")
        #expect(!requests.contains { $0.contains(id) }, "host ids never become label values")

        // The admin token and a host credential go through the server too.
        #expect(try setup.fleet.api("GET", "/api/v1/audit", token: setup.fleet.adminToken).status == 200)
        let extra = try setup.fleet.enroll(secretFile: try setup.fleet.enrollSecret(), hostname: "extra")
        let credential = try #require(try setup.json(extra.body)["credential"] as? String, "\(extra)")
        #expect(try setup.fleet.api("GET", "/agent/v1/desired?wait=0", token: credential).status == 200)
        setup.lab.stop(setup.server)
        let serverLog = try String(contentsOfFile: setup.lab.directory + "/server-1.log", encoding: .utf8)
        let logs = serverLog + setup.agentLog
        let secrets = try setup.lab.run(nil, ["sh", "-c", "cat \(setup.lab.directory)/enroll-*.secret"]).stdout
        for secret in [setup.responder, setup.viewer, setup.fleet.adminToken, credential, password] + secrets.split(separator: "\n").map(String.init)
            where !secret.isEmpty {
            #expect(!logs.contains(secret), "a secret in the logs")
        }
        #expect(serverLog.contains("postgresql://postgres@127.0.0.1:5432/postgres"), "the database is named in the log, without its password")
        #expect(!logs.contains("Bearer"))
        for line in serverLog.split(separator: "\n") {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
            #expect(object?["level"] != nil && object?["message"] != nil, "not a log object: \(line)")
        }
        #expect(serverLog.contains("serving metrics on 127.0.0.1:9465"))
    }

    @Test("certificate renew: a new serving certificate from the same CA; the restarted server serves it and the agent reconnects, nothing changed on the host")
    func certificateRenewal() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let data = setup.fleet.data
        let before = try String(contentsOfFile: data + "/server.pem", encoding: .utf8)
        let ca = try String(contentsOfFile: data + "/ca.pem", encoding: .utf8)
        let refused = try setup.lab.run(nil, [setup.fleet.serverBinary, "certificate", "renew", "--data", data])
        // A usage error: 2, as for `cordon` (Docs/cli.md).
        #expect(refused.status == 2 && refused.stderr.contains("--name"), "\(refused)")
        let renewed = try setup.lab.run(nil, [setup.fleet.serverBinary, "certificate", "renew", "--data", data, "--name", F.serverA, "--name", F.serverB])
        #expect(renewed.succeeded, "\(renewed)")
        let after = try String(contentsOfFile: data + "/server.pem", encoding: .utf8)
        #expect(after != before)
        #expect(try String(contentsOfFile: data + "/server.pem.old", encoding: .utf8) == before)
        #expect(try String(contentsOfFile: data + "/ca.pem", encoding: .utf8) == ca, "the CA stays")
        var info = stat()
        #expect(stat(data + "/server-key.pem", &info) == 0 && info.st_mode & 0o777 == 0o600)

        setup.lab.stop(setup.server)
        let restarted = Date()
        setup.server = try setup.fleet.startServer()
        // What the restarted server presents is the new certificate, verified by the same ca.pem.
        let served = try setup.lab.run(setup.fleet.server, ["sh", "-c", "echo | openssl s_client -connect \(F.serverA):\(F.port) -CAfile \(setup.fleet.caFile) 2>/dev/null | openssl x509"])
        #expect(served.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == after.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(try setup.seen(id, after: restarted, timeout: 40), "the agent reconnected to the renewed server\n\(setup.agentLog)")
    }

    @Test("a database migrated by a newer server is refused by this one, with the reason, and left as it is")
    func downgradeRefused() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        setup.lab.stop(setup.server)
        _ = try setup.fleet.postgres.psql("INSERT INTO schema_migrations (name) VALUES ('v99-from-the-future')")
        let log = setup.lab.directory + "/server-newer.log"
        let server = try setup.lab.spawn(setup.fleet.server, [setup.fleet.serverBinary, "run", "--data", setup.fleet.data,
                                                              "--database", setup.fleet.postgres.url, "--listen", "0.0.0.0:\(F.port)"], log: log)
        let status = server.wait(timeout: 30)
        #expect(status != nil && status != 0, "the server does not serve a newer schema")
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("v99-from-the-future") && text.contains("a newer server migrated it"), "\(text)")
        let token = try setup.lab.run(setup.fleet.server, [setup.fleet.serverBinary, "token", "create", "--data", setup.fleet.data,
                                                           "--database", setup.fleet.postgres.url, "--role", "viewer", "--name", "x"])
        #expect(!token.succeeded && token.stderr.contains("newer"), "\(token)")
        #expect(try setup.fleet.postgres.psql("SELECT count(*) FROM schema_migrations WHERE name = 'v99-from-the-future'")
                    .trimmingCharacters(in: .whitespacesAndNewlines) == "1", "left as it is")
    }

    @Test("a remote isolate cuts the host off except the server and DNS within well under a second; release restores it")
    func remoteIsolateAndRelease() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        #expect(try setup.webReachable())

        let started = Date()
        let accepted = try setup.request(id, "isolated", reason: "EDR alert 4711")
        #expect(accepted["status"] as? String == "pending")
        #expect(accepted["generation"] as? Int == 1)
        let intentID = try #require(accepted["intent_id"] as? String)
        let done = try setup.settle(intentID, timeout: 10)
        let confirmed = Date().timeIntervalSince(started)
        #expect(done["status"] as? String == "succeeded", "\(done)\n\(setup.agentLog)")
        #expect(confirmed < 2, "confirmed in \(confirmed) s")
        #expect(done["requested_by"] as? String == "rita")

        #expect(!(try setup.webReachable()), "the web service is cut off")
        #expect(try setup.lab.run(setup.fleet.a, ["socat", "-u", "OPEN:/dev/null", "UDP4:\(F.serverA):53"]).succeeded, "DNS to the resolver")
        #expect(try setup.status(setup.fleet.a)["isolated"] as? Bool == true)
        let host = try setup.host(id)
        let isolation = try #require(host["isolation"] as? [String: Any])
        #expect(isolation["desired"] as? String == "isolated" && isolation["observed"] as? String == "isolated")
        #expect(isolation["generation"] as? Int == 1 && isolation["observed_generation"] as? Int == 1)
        // The isolation entry is on the server with the confirmation.
        let log = try setup.json(try setup.fleet.api("GET", "/api/v1/hosts/\(id)/log", token: setup.viewer).body)
        let entries = try #require(log["entries"] as? [[String: Any]])
        #expect(entries.contains { $0["action"] as? String == "isolate" && ($0["reason"] as? String)?.contains("EDR alert 4711") == true }, "\(entries)")
        #expect((log["verification"] as? [String: Any])?["intact"] as? Bool == true, "\(log["verification"] ?? "")")

        // Isolating an isolated host: a success at once, nothing for the agent to do.
        let again = try setup.request(id, "isolated")
        #expect(again["status"] as? String == "succeeded" && again["generation"] as? Int == 1, "\(again)")

        let release = try setup.request(id, "released", reason: "cleaned")
        let released = try setup.settle(try #require(release["intent_id"] as? String), timeout: 20)
        #expect(released["status"] as? String == "succeeded", "\(released)\n\(setup.agentLog)")
        #expect(try setup.webReachable())
        #expect(try setup.status(setup.fleet.a)["isolated"] as? Bool == false)
    }

    @Test("an enrollment secret's extra whitelist is in the host's document: open while the host is isolated, the rest cut")
    func extraWhitelist() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        let bad = try setup.lab.run(f.server, [f.serverBinary, "enroll-secret", "create", "--data", f.data, "--database", f.postgres.url,
                                               "--extra-allow", "tcp/203.0.113.7/24:443"])
        #expect(bad.status == 2 && bad.stderr.contains("host bits"), "\(bad)")
        setup.agent = try f.startAgent(f.a, secretFile: try f.enrollSecret(tags: "tier=web", extraAllow: ["tcp/\(F.web):443"]))
        let id = try setup.hostID(timeout: 15)
        let state = try f.api("GET", "/agent/v1/state", token: try Self.credential(setup))
        let whitelist = ((try setup.json(state.body)["isolation"] as? [String: Any])?["extra_whitelist"] as? [String])
        #expect(whitelist == ["tcp/\(F.web):443"], "\(state)")
        // Taken from the enrollment's own document (generation 0), before any request: a local
        // isolation on a newly enrolled host keeps the site's whitelist too.
        let adopted = Date().addingTimeInterval(15)
        var management = ""
        while Date() < adopted {
            management = (try setup.status(f.a)["management"] as? String) ?? ""
            if management.contains("extra tcp/\(F.web)") { break }
            usleep(200_000)
        }
        #expect(management.contains("extra tcp/\(F.web)"), "\(management)\n\(setup.agentLog)")
        func pingWeb() throws -> Bool { try setup.lab.run(f.a, ["ping", "-c", "1", "-W", "1", F.web], timeout: 5).succeeded }
        #expect(try pingWeb() && setup.webReachable())
        let isolate = try setup.request(id, "isolated", reason: "whitelist test")
        #expect(try setup.settle(try #require(isolate["intent_id"] as? String), timeout: 15)["status"] as? String == "succeeded")
        #expect(try setup.webReachable(), "the whitelisted service stays open while isolated")
        #expect(!(try pingWeb()), "anything else to the same peer is cut")
        #expect((try setup.status(f.a)["management"] as? String)?.contains("extra tcp/\(F.web)") == true)
        let release = try setup.request(id, "released", reason: "done")
        #expect(try setup.settle(try #require(release["intent_id"] as? String), timeout: 30)["status"] as? String == "succeeded")
        #expect(try pingWeb())
    }

    /// Host a's own credential, from its agent's database.
    static func credential(_ setup: Setup) throws -> String {
        let stored = try #require(try FlowStore(readingFrom: setup.fleet.directory(of: setup.fleet.a) + "/cordon.db").state("fleet_enrollment"))
        return try #require(try setup.json(stored)["credential"] as? String)
    }

    @Test("tags and selectors: an admin's tags win and are audited, a selector previews what it matches, bad ones name the column, lists page")
    func tagsAndSelectors() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        for (name, tags) in [("db-1", "tier=db,env=prod"), ("db-2", "tier=db,env=dev")] {
            #expect(try f.enroll(secretFile: try f.enrollSecret(tags: tags), hostname: name).status == 201)
        }
        func preview(_ selector: String) throws -> (status: Int, body: [String: Any]) {
            let answer = try f.api("GET", "/api/v1/selectors/preview?selector=" + FleetClientQuery.encode(selector), token: setup.viewer)
            return (answer.status, (try? setup.json(answer.body)) ?? [:])
        }
        let db = try preview(#"tier == "db" && env != "dev""#)
        #expect(db.status == 200 && db.body["matches"] as? Int == 1, "\(db)")
        #expect((db.body["hosts"] as? [[String: Any]])?.map { $0["hostname"] as? String } == ["db-1"])
        #expect(db.body["selector"] as? String == #"tier == "db" && env != "dev""#)
        #expect(try preview(#"tier in {"db", "web"}"#).body["matches"] as? Int == 3)
        let bad = try preview(#"tier == "#)
        #expect(bad.status == 400 && bad.body["field"] as? String == "selector" && (bad.body["error"] as? String)?.contains("column 9") == true, "\(bad)")

        // An admin's tags: a viewer may not; the admin's win over the secret's and are marked so.
        let denied = try f.fleet(["tags", "db-2", "--set", "env=prod"], token: setup.viewer)
        #expect(denied.status == 1 && denied.stderr.contains("admin"), "\(denied)")
        let set = try f.fleet(["tags", "db-2", "--set", "env=prod,pci=yes", "--json"], token: f.adminToken)
        let host = try #require(try? setup.json(set.stdout), "\(set)")
        #expect(host["tags"] as? [String: String] == ["tier": "db", "env": "prod", "pci": "yes"])
        #expect(host["tag_sources"] as? [String: String] == ["tier": "secret", "env": "admin", "pci": "admin"])
        let listed = try f.fleet(["hosts", "--selector", "has(pci)"], token: setup.viewer)
        #expect(listed.succeeded && listed.stdout.contains("selector has(pci) matches 1 host") && listed.stdout.contains("db-2"), "\(listed)")
        let unset = try f.fleet(["tags", "db-2", "--unset", "pci"], token: f.adminToken)
        #expect(unset.succeeded && !unset.stdout.contains("pci"), "\(unset)")
        #expect(try preview("has(pci)").body["matches"] as? Int == 0)
        let both = try f.api("PATCH", "/api/v1/hosts/\(try setup.hostID(timeout: 5))/tags", token: f.adminToken, body: #"{"set":{"a":"1"},"unset":["a"]}"#)
        #expect(both.status == 422 && (try? setup.json(both.body))?["field"] as? String == "unset", "\(both)")
        let audit = try setup.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []
        #expect(audit.contains { $0["action"] as? String == "tags" && ($0["detail"] as? String)?.contains("set pci=yes") == true }, "\(audit.prefix(3))")

        // Pages by host name, with the total.
        let page = try setup.json(try f.api("GET", "/api/v1/hosts?limit=1&offset=1", token: setup.viewer).body)
        #expect(page["total"] as? Int == 3 && (page["items"] as? [[String: Any]])?.map { $0["hostname"] as? String } == ["db-2"], "\(page)")
        #expect(try f.api("GET", "/api/v1/hosts?limit=0", token: setup.viewer).status == 400)
        // Sorted in the database by every key, both ways: each is the same hosts, and by name
        // descending is the reverse of ascending.
        let names = { (query: String) throws -> [String] in
            (try setup.json(try f.api("GET", "/api/v1/hosts?" + query, token: setup.viewer).body)["items"] as? [[String: Any]] ?? [])
                .map { $0["hostname"] as? String ?? "" }
        }
        let ascending = try names("sort=hostname")
        #expect(ascending.count == 3 && ascending == ascending.sorted(), "\(ascending)")
        #expect(try names("sort=hostname&order=desc") == ascending.reversed())
        for key in ["hostname", "mode", "connection", "isolation", "lost_events", "guard_restores"] { for order in ["asc", "desc"] {
            #expect(try names("sort=\(key)&order=\(order)").sorted() == ascending, "\(key) \(order)")
        } }
        #expect(try names("sort=lost_events&selector=" + "has(pci)".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!).count == 0)
    }

    @Test("fleet policy: a per-host review from the uploaded record (exit 3 on lost traffic), approve as an immutable version, assign by selector (pending, nothing changes on the host), unassign")
    func policyReviewApproveAssign() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        let approver = try f.token(role: "approver", name: "apollo")
        // The record: host a reached the web service; the server has the flow once uploaded.
        #expect(try setup.webReachable())
        let deadline = Date().addingTimeInterval(30)
        var uploaded = false
        while Date() < deadline && !uploaded {
            let answer = try f.api("GET", "/api/v1/hosts/\(id)/flows", token: setup.viewer)
            uploaded = answer.body.contains("\"\(F.web)\"")
            if !uploaded { usleep(300_000) }
        }
        #expect(uploaded, "the agent uploaded its flow to \(F.web)")
        let dir = setup.lab.directory
        // The tier's proposal from its merged record: the web service, seen on its one host.
        let standard = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Rulesets/standard-networks.yaml").path
        let proposed = try f.fleet(["propose", "--selector", #"tier == "web""#, "--out", dir + "/proposed.yaml", "--networks", standard], token: setup.viewer)
        #expect(proposed.succeeded && proposed.stdout.contains("1 host"), "\(proposed)")
        let text = try String(contentsOfFile: dir + "/proposed.yaml", encoding: .utf8)
        #expect(text.contains("to \(F.web)") && text.contains("seen on 1 of 1 host"), "\(text)")
        #expect((try? RulesetParser.parse(text, file: "proposed.yaml")) != nil, "the proposal parses")
        let narrow = """
            name: web
            appliesTo: 'tier == "web"'
            networks:
              - name: resolver
                entries: [\(F.serverA)]
                services: [udp/53, tcp/53]
            outgoing:
              - to: resolver
            """
        try narrow.write(toFile: dir + "/narrow.yaml", atomically: false, encoding: .utf8)
        try (narrow.replacingOccurrences(of: "outgoing:", with: """
              - name: web
                entries: [\(F.web)]
                services: [tcp/443]
            outgoing:
              - to: web
            """) + "\n").write(toFile: dir + "/web.yaml", atomically: false, encoding: .utf8)
        let lossy = try f.fleet(["review", dir + "/narrow.yaml"], token: setup.viewer)
        #expect(lossy.status == 3 && lossy.stdout.contains("1 would lose traffic") && lossy.stdout.contains("rejected: outbound tcp/443 \(F.web)"),
                "\(lossy)")
        let clean = try f.fleet(["review", dir + "/web.yaml", "--json"], token: setup.viewer)
        let hosts = (try? setup.json(clean.stdout))?["hosts"] as? [[String: Any]]
        #expect(clean.status == 0 && hosts?.count == 1 && hosts?.first?["rejected_count"] as? Int == 0, "\(clean)")
        let nobody = try f.fleet(["review", dir + "/web.yaml", "--selector", #"tier == "none""#], token: setup.viewer)
        #expect(nobody.status == 1 && nobody.stderr.contains("matches no host"), "\(nobody)")

        // Approve: not as a viewer; as an approver, version 1 with its review; the file's name must agree.
        let denied = try f.fleet(["approve", dir + "/web.yaml", "--name", "web"], token: setup.viewer)
        #expect(denied.status == 1 && denied.stderr.contains("approver"), "\(denied)")
        let misnamed = try f.fleet(["approve", dir + "/web.yaml", "--name", "other"], token: approver)
        #expect(misnamed.status == 1 && misnamed.stderr.contains("named 'web'"), "\(misnamed)")
        let approved = try f.fleet(["approve", dir + "/web.yaml", "--name", "web", "--json"], token: approver)
        let version = try? setup.json(approved.stdout)
        #expect(approved.succeeded && version?["version"] as? Int == 1 && (version?["review"] as? [String: Any])?["hosts"] as? Int == 1, "\(approved)")
        let immutable = try? f.postgres.psql("UPDATE ruleset_versions SET content = 'x'")
        #expect(immutable == nil, "the database refuses to change an approved version")

        // Assign: a dry run names the hosts; a selector matching nobody is refused; the host's sync is pending.
        let dry = try f.fleet(["assign", "web", "--selector", #"tier == "web""#, "--dry-run"], token: approver)
        #expect(dry.succeeded && dry.stdout.contains("matches 1 host"), "\(dry)")
        let empty = try f.fleet(["assign", "web", "--selector", #"tier == "none""#], token: approver)
        #expect(empty.status == 1 && empty.stderr.contains("matches no host"), "\(empty)")
        let assigned = try f.fleet(["assign", "web", "--selector", #"tier == "web""#, "--json"], token: approver)
        let assignment = try #require(try? setup.json(assigned.stdout), "\(assigned)")
        #expect(assignment["resolved_version"] as? Int == 1 && assignment["hosts"] as? Int == 1)
        let policy = try #require(try setup.host(id)["policy"] as? [String: Any])
        let effective = try #require(policy["assigned"] as? [String: Any], "\(policy)")
        #expect(policy["sync"] as? String == "pending" && policy["desired_digest"] is NSNull, "\(policy)")
        #expect((effective["content"] as? String)?.contains("to: web") == true)
        #expect((effective["sources"] as? [[String: Any]])?.contains { $0["rule"] as? String == "outgoing to web" && $0["ruleset"] as? String == "web" } == true)
        #expect(try setup.status(f.a)["mode"] as? String == "discovery", "an assignment changes nothing on the host")
        let listed = try f.fleet(["rulesets"], token: setup.viewer)
        #expect(listed.succeeded && listed.stdout.contains("latest (1)"), "\(listed)")
        // Unassign: the host has no effective policy any more.
        let unassigned = try f.fleet(["unassign", try #require(assignment["id"] as? String)], token: approver)
        #expect(unassigned.succeeded, "\(unassigned)")
        let after = try #require(try setup.host(id)["policy"] as? [String: Any])
        #expect(after["assigned"] is NSNull && after["sync"] as? String == "in_sync", "\(after)")
        let audit = try setup.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []
        #expect(Set(audit.compactMap { $0["action"] as? String }).isSuperset(of: ["ruleset approve", "assign", "unassign"]))
    }

    @Test("offline host: isolate then release requested while the agent is down end released with nothing pending")
    func offlineIsolateThenRelease() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        setup.agent!.signal(SIGKILL)
        setup.agent!.wait(timeout: 5)

        let isolate = try setup.request(id, "isolated", reason: "alert while offline")
        #expect(isolate["status"] as? String == "pending")
        let release = try setup.request(id, "released", reason: "false positive")
        #expect(release["generation"] as? Int == 2)
        let superseded = try setup.intent(try #require(isolate["intent_id"] as? String))
        #expect(superseded["status"] as? String == "superseded", "\(superseded)")
        #expect(try setup.host(id)["isolation"].flatMap { ($0 as? [String: Any])?["pending_since"] as? String } != nil)

        setup.agent = try setup.fleet.startAgent(setup.fleet.a, secretFile: nil)
        let releaseView = try setup.settle(try #require(release["intent_id"] as? String), timeout: 15)
        #expect(releaseView["status"] as? String == "succeeded", "\(releaseView)\n\(setup.agentLog)")
        #expect(try setup.status(setup.fleet.a)["isolated"] as? Bool == false)
        #expect(try setup.webReachable())
        let pending = try setup.json(try setup.fleet.api("GET", "/api/v1/intents?host_id=\(id)&status=pending", token: setup.viewer).body)
        #expect((pending["items"] as? [Any])?.isEmpty == true, "\(pending)")
        // The agent never isolated: the decision log holds no isolate.
        let log = try setup.json(try setup.fleet.api("GET", "/api/v1/hosts/\(id)/log", token: setup.viewer).body)
        #expect(!((log["entries"] as? [[String: Any]]) ?? []).contains { $0["action"] as? String == "isolate" })
    }

    @Test("cordon fleet: hosts, show, isolate by host name, intents, log --verify and release, in text and JSON")
    func fleetCLI() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        let hosts = try f.fleet(["hosts", "--json"], token: setup.viewer)
        #expect(hosts.succeeded, "\(hosts.stderr)")
        let list = try JSONSerialization.jsonObject(with: Data(hosts.stdout.utf8)) as? [[String: Any]]
        let name = try #require(list?.first?["hostname"] as? String)
        #expect(list?.first?["id"] as? String == id)
        let denied = try f.fleet(["isolate", name, "--reason", "cli"], token: setup.viewer)
        #expect(denied.status == 1 && denied.stderr.contains("responder"), "\(denied.stderr)")
        let isolate = try f.fleet(["isolate", name, "--reason", "cli test"], token: setup.responder)
        #expect(isolate.succeeded && isolate.stdout.contains("succeeded"), "\(isolate.stdout)\(isolate.stderr)")
        #expect(!(try setup.webReachable()))
        let show = try f.fleet(["show", id], token: setup.viewer)
        #expect(show.stdout.contains("desired isolated (generation 1), observed isolated (generation 1)"), "\(show.stdout)")
        let intents = try f.fleet(["intents", "--host", id, "--json"], token: setup.viewer)
        let items = try JSONSerialization.jsonObject(with: Data(intents.stdout.utf8)) as? [[String: Any]]
        #expect(items?.first?["status"] as? String == "succeeded" && items?.first?["reason"] as? String == "cli test", "\(intents.stdout)")
        let log = try f.fleet(["log", name, "--verify"], token: setup.viewer)
        #expect(log.succeeded && log.stdout.contains("decision log intact"), "\(log.stdout)\(log.stderr)")
        let release = try f.fleet(["release", name], token: setup.responder)
        #expect(release.succeeded && release.stdout.contains("succeeded"), "\(release.stdout)\(release.stderr)")
        #expect(try setup.webReachable())
        let missing = try setup.lab.run(f.server, [f.cordonBinary, "fleet", "hosts", "--server", "https://\(F.serverA):\(F.port)", "--ca", f.caFile])
        #expect(missing.status == 2 && missing.stderr.contains("no API token"), "\(missing.stderr)")
    }

    @Test("tokens: none or unknown is 401, a viewer may not isolate (403), a host credential is not an API token; bad input names its field")
    func rolesAndBadInput() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        #expect(try f.api("GET", "/api/v1/hosts", token: nil).status == 401)
        #expect(try f.api("GET", "/api/v1/hosts", token: "cordon_api_nonsense").status == 401)
        let body = #"{"state":"isolated","reason":"x"}"#
        let viewer = try f.api("POST", "/api/v1/hosts/\(id)/isolation", token: setup.viewer, body: body)
        #expect(viewer.status == 403 && viewer.body.contains("responder"), "\(viewer)")
        // The agent's own credential reaches its agent routes only.
        let db = f.directory(of: f.a) + "/cordon.db"
        let stored = try #require(try FlowStore(readingFrom: db).state("fleet_enrollment"))
        let credential = try #require(try setup.json(stored)["credential"] as? String)
        #expect(try f.api("GET", "/api/v1/hosts", token: credential).status == 401)
        #expect(try f.api("GET", "/agent/v1/state", token: credential).status == 200)
        #expect(try f.api("GET", "/agent/v1/desired", token: credential).status == 200, "0.2.0's agents poll here")
        #expect(try f.api("GET", "/agent/v1/desired", token: setup.viewer).status == 401, "an API token is not a host credential")
        for (text, field) in [(#"{"reason":"x"}"#, "state"), (#"{"state":"gone","reason":"x"}"#, "state"), (#"{"state":"isolated"}"#, "reason"),
                              (#"{"state":"isolated","reason":""}"#, "reason"), ("not json", nil)] {
            let answer = try f.api("POST", "/api/v1/hosts/\(id)/isolation", token: setup.responder, body: text)
            #expect([400, 422].contains(answer.status), "\(text): \(answer)")
            if let field { #expect((try? setup.json(answer.body))?["field"] as? String == field, "\(text): \(answer.body)") }
        }
        let unknown = try f.api("POST", "/api/v1/hosts/\(UUID().uuidString)/isolation", token: setup.responder, body: body)
        #expect(unknown.status == 404)
        #expect(try f.api("GET", "/api/v1/hosts/not-a-uuid", token: setup.viewer).status == 400)
        #expect(try f.api("GET", "/api/v1/intents?status=bogus", token: setup.viewer).status == 400)
        // Every change is audited (the enrollment, the admin's token creations); the refused requests changed nothing.
        let audit = try f.api("GET", "/api/v1/audit", token: f.adminToken)
        #expect(audit.status == 200)
        let actions = ((try setup.json(audit.body)["items"] as? [[String: Any]]) ?? []).compactMap { $0["action"] as? String }
        #expect(actions.contains("enroll") && actions.contains("token create"), "\(actions)")
        #expect(!actions.contains { $0.hasPrefix("isolation") }, "\(actions)")
        #expect(try f.api("GET", "/api/v1/audit", token: setup.responder).status == 403)
    }

    @Test("administration: a revoked API token is refused at once, init will not overwrite a CA, an expired enrollment secret admits nobody")
    func administration() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        #expect(try f.api("GET", "/api/v1/hosts", token: setup.viewer).status == 200)
        let revoke = try setup.lab.run(f.server, [f.serverBinary, "token", "revoke", "vic", "--data", f.data, "--database", f.postgres.url])
        #expect(revoke.succeeded && revoke.stdout.contains("revoked 1 token"), "\(revoke)")
        // No cache between the database and the check: the next request is refused.
        #expect(try f.api("GET", "/api/v1/hosts", token: setup.viewer).status == 401)
        #expect(try f.api("GET", "/api/v1/hosts", token: setup.responder).status == 200, "only the named token")
        let again = try setup.lab.run(f.server, [f.serverBinary, "token", "revoke", "vic", "--data", f.data, "--database", f.postgres.url])
        #expect(again.status == 1 && again.stderr.contains("no active token"), "\(again)")

        let ca = try String(contentsOfFile: f.caFile, encoding: .utf8)
        let key = try String(contentsOfFile: f.data + "/ca-key.pem", encoding: .utf8)
        let reinit = try setup.lab.run(f.server, [f.serverBinary, "init", "--data", f.data, "--database", f.postgres.url, "--name", F.serverA])
        #expect(reinit.status == 1 && reinit.stderr.contains("exists already"), "\(reinit)")
        #expect(try String(contentsOfFile: f.caFile, encoding: .utf8) == ca && String(contentsOfFile: f.data + "/ca-key.pem", encoding: .utf8) == key,
                "the CA agents trust is untouched")
        #expect(!reinit.stdout.contains("cordon_api_"), "no second admin token was issued")

        let shortLived = try f.enrollSecret(ttl: "1s")
        let expiry = Date().addingTimeInterval(1)
        let deadline = Date().addingTimeInterval(10)
        var answer = try f.enroll(secretFile: shortLived, hostname: "late")
        while answer.status == 201 || Date() < expiry {
            // Enrolled before it expired: the secret has no use limit, so try again until it has.
            if Date() > deadline { break }
            usleep(200_000)
            answer = try f.enroll(secretFile: shortLived, hostname: "late")
        }
        #expect(answer.status == 403 && answer.body.contains("secret"), "\(answer)")
        let ttl = try setup.lab.run(f.server, [f.serverBinary, "enroll-secret", "create", "--data", f.data, "--database", f.postgres.url, "--ttl", "soon"])
        #expect(ttl.status == 2 && ttl.stderr.contains("--ttl"), "\(ttl)")
    }

    @Test("what an agent sends cannot hurt the server: a log sequence at Int64's end is flagged, not a crash; NUL and bad numbers are refused by field; 405 names the allowed method")
    func hostileAgentInput() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        let secretFile = try f.enrollSecret()
        func enroll(_ hostname: String) throws -> (status: Int, body: String) { try f.enroll(secretFile: secretFile, hostname: hostname) }
        let nul = try enroll(#"evil\u0000host"#)
        #expect(nul.status == 400 && (try? setup.json(nul.body))?["field"] as? String == "hostname", "\(nul)")
        let enrolled = try enroll("hostile")
        let credential = try #require(try setup.json(enrolled.body)["credential"] as? String, "\(enrolled)")
        let host = try #require(try setup.json(enrolled.body)["host_id"] as? String)
        func report(sequence: Int64, mode: String = "discovery", generation: Int64 = 0, reason: String = "r") throws -> (status: Int, body: String) {
            var entry = Decision(sequence: sequence, id: "e\(sequence)", action: "isolate", operator: "mallory", reason: reason, backend: "nftables", policy: "p",
                                 policyDigest: ContentDigest.hex("p"), managementWhitelist: [], whitelist: "", appliedAt: 1_700_000_000, outcome: "success",
                                 previousHash: "", hash: "", format: Decision.currentFormat)
            entry.hash = ContentDigest.hex(Decision.chained(entry))
            let status = AgentStatus(mode: mode, isolated: false, rulesetVersion: nil, rulesetDigest: nil, lostEvents: 0, guardRestores: 0,
                                     guardEscalations: 0, flows: 0, agentVersion: "x", addresses: [])
            let body = AgentReport(status: status, observed: .released, appliedGeneration: generation, applied: nil, local: nil, log: [entry], flows: [])
            return try f.api("POST", "/agent/v1/report", token: credential, body: String(decoding: Wire.encode(body), as: UTF8.self))
        }
        // A gap up to Int64.max is a problem on record, not an overflow.
        let top = try report(sequence: .max)
        #expect(top.status == 200, "\(top)")
        #expect(setup.server.isRunning, "the server died on a log sequence of Int64.max")
        let log = try f.api("GET", "/api/v1/hosts/\(host)/log", token: f.adminToken)
        #expect(log.status == 200 && log.body.contains("missing"), "the gap before it is flagged: \(log.body.prefix(400))")
        // Int64.min once crashed it too (the chain check's `sequence - 1`); numbers below 1 are refused before.
        for (answer, field) in [(try report(sequence: 0), "log.sequence"), (try report(sequence: .min), "log.sequence"), (try report(sequence: 1, mode: "chaos"), "status.mode"),
                                (try report(sequence: 1, generation: -1), "applied_generation")] {
            #expect(answer.status == 422 && (try? setup.json(answer.body))?["field"] as? String == field, "\(field): \(answer)")
        }
        // An entry sent again under the same number but with other content is a rewritten history:
        // kept as first received, flagged, and `cordon fleet log --verify` fails naming it.
        #expect(try report(sequence: 7, reason: "first").status == 200)
        #expect(try report(sequence: 7, reason: "rewritten").status == 200)
        let rewritten = try f.api("GET", "/api/v1/hosts/\(host)/log", token: f.adminToken)
        let verification = try #require(try setup.json(rewritten.body)["verification"] as? [String: Any])
        #expect((verification["problems"] as? [String])?.contains("entry 7 differs from the one received before") == true, "\(verification)")
        let kept = (try setup.json(rewritten.body)["entries"] as? [[String: Any]])?.first { $0["sequence"] as? Int == 7 }
        #expect(kept?["reason"] as? String == "first", "the first entry stays: \(String(describing: kept))")
        let verify = try f.fleet(["log", "hostile", "--verify"], token: setup.viewer)
        #expect(verify.status == 1 && verify.stderr.contains("entry 7 differs"), "\(verify)")
        let wrongMethod = try f.api("DELETE", "/api/v1/hosts", token: f.adminToken)
        #expect(wrongMethod.status == 405 && wrongMethod.body.contains("allowed: GET"), "\(wrongMethod)")
        #expect(try f.api("GET", "/api/v1/nothing-here", token: f.adminToken).status == 404)
        #expect(setup.server.isRunning)
    }

    static let fuzzer = "/opt/cordon-test-peers/schemathesis/bin/schemathesis"

    @Test("schemathesis against the served OpenAPI document: no input is a 500 or a crash, every answer is the documented one")
    func apiFuzz() throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        guard FileManager.default.isExecutableFile(atPath: Self.fuzzer) else {
            if Integration.required { Issue.record("schemathesis is missing at \(Self.fuzzer): run `bash .ci/setup --tests`") }
            return
        }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        let dir = setup.lab.directory
        let document = try f.api("GET", "/api/v1/openapi.json", token: nil)
        #expect(document.status == 200)
        try document.body.write(toFile: dir + "/openapi.json", atomically: false, encoding: .utf8)
        // A host of the fuzzer's own, so its reports do not disturb host a's agent.
        let enroll = try f.enroll(secretFile: try f.enrollSecret(), hostname: "fuzz")
        let credential = try #require(try setup.json(enroll.body)["credential"] as? String, "\(enroll)")
        // Reusing an Idempotency-Key for another request is a 422 (the IETF idempotency-key draft);
        // a poll is fuzzed with wait=0, or each example would hold it for up to 25 s.
        try """
            [[operations]]
            include-name = "POST /api/v1/hosts/{id}/isolation"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "5xx"]

            [[operations]]
            include-path = "/agent/v1/desired"
            parameters = { "query.wait" = 0 }

            [[operations]]
            include-path = "/agent/v1/state"
            parameters = { "query.wait" = 0 }

            # Selectors and ruleset files have grammars of their own, beyond what a JSON schema
            # says: a string that does not parse is 400 (naming the column), a ruleset that does
            # not, or a selector that matches no host, 422.
            [[operations]]
            include-name = "GET /api/v1/hosts"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403"]

            [[operations]]
            include-name = "GET /api/v1/selectors/preview"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403"]

            [[operations]]
            include-name = "POST /api/v1/assignments"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "422"]

            [[operations]]
            include-name = "POST /api/v1/proposals"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "422"]

            [[operations]]
            include-name = "POST /api/v1/reviews"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "422"]

            [[operations]]
            include-name = "POST /api/v1/rulesets/{name}/versions"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "409", "422"]

            # Wave sizes have a grammar of their own (422); a host already in a running rollout is 409.
            [[operations]]
            include-name = "POST /api/v1/rollouts"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "409", "422"]

            [[operations]]
            include-path-regex = "^/api/v1/rollouts/"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]

            # The map's selector has its grammar, its edge id its form (400); a host may be unknown (404).
            [[operations]]
            include-path-regex = "^/api/v1/map"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

            # The console's session: the fuzzer's token is a bearer, so there is no session to
            # show or end (404), and a made-up token does not sign in (401).
            [[operations]]
            include-path = "/api/v1/session"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404"]

            # Tags beyond the 32 a host may carry, counting those it has, are 422.
            [[operations]]
            include-name = "PATCH /api/v1/hosts/{id}/tags"
            checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]
            """.write(toFile: dir + "/schemathesis.toml", atomically: false, encoding: .utf8)
        // The agent's routes first (what they store is then read back through the API's).
        for (token, selection) in [(credential, ["--include-path-regex", "^/agent/"]), (f.adminToken, ["--exclude-path-regex", "^/agent/"])] {
            let run = try setup.lab.run(f.server, ["env", "-C", dir, Self.fuzzer, "--config-file", dir + "/schemathesis.toml", "run", dir + "/openapi.json",
                                                   "--url", "https://\(F.serverA):\(F.port)", "-H", "Authorization: Bearer \(token)",
                                                   "--tls-verify", f.caFile, "--checks", "all", "--max-examples", "60", "--seed", "1",
                                                   "--generation-database", "none", "--request-timeout", "30"] + selection, timeout: 600)
            #expect(run.succeeded, "schemathesis \(selection):\n\(run.stdout.suffix(6000))\(run.stderr.suffix(2000))")
        }
        #expect(setup.server.isRunning, "the server died under the fuzzer")
    }
}

/// Crashes, replicas, revocation and the conflicts between local and remote isolation.
@Suite(.serialized) struct FleetRecoveryTests {
    typealias F = FleetScenario
    typealias Setup = FleetTests.Setup

    /// The agent's own log, as (sequence, hash), and the server's copy of it.
    static func logs(_ setup: Setup, _ id: String) throws -> (agent: [[String]], server: [[String]], intact: Bool?) {
        let agent = try FlowStore(readingFrom: setup.fleet.directory(of: setup.fleet.a) + "/cordon.db").decisions().map { [String($0.sequence), $0.hash] }
        let log = try setup.json(try setup.fleet.api("GET", "/api/v1/hosts/\(id)/log", token: setup.viewer).body)
        let server = ((log["entries"] as? [[String: Any]]) ?? []).map { ["\($0["sequence"] ?? "")", "\($0["hash"] ?? "")"] }
        return (agent, server, (log["verification"] as? [String: Any])?["intact"] as? Bool)
    }

    static func describe(_ setup: Setup, _ id: String) -> String { (try? logs(setup, id)).map { "\($0)" } ?? "(logs unreadable)" }

    /// Waits until the server holds exactly the agent's log.
    static func converged(_ setup: Setup, _ id: String, timeout: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (agent, server, intact) = try logs(setup, id)
            if agent == server && intact == true { return true }
            usleep(200_000)
        }
        return false
    }

    /// Local isolations and releases through the agent: each one decision-log entry or more.
    static func churn(_ setup: Setup, rounds: Int) throws {
        for round in 0..<rounds {
            try local(setup, "isolate", reason: "churn \(round)")
            try local(setup, "release", reason: "churn \(round)")
        }
    }

    /// `cordon isolate` or `cordon release` on host a, through its agent.
    static func local(_ setup: Setup, _ verb: String, reason: String) throws {
        let dir = setup.fleet.directory(of: setup.fleet.a)
        let result = try setup.lab.run(nil, [setup.fleet.cordonBinary, verb, "--operator", "ivy", "--reason", reason,
                                             "--socket", dir + "/cordon.sock", "--db", dir + "/cordon.db"], timeout: 40)
        guard result.succeeded else { throw LabError("\(verb): \(result.stdout)\(result.stderr)") }
    }

    @Test("kill -9 of the agent, of the server and of PostgreSQL: the server ends with every log entry exactly once and its flows")
    func nothingLostNothingTwice() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        // Entries written while the server is dead are buffered in the agent's SQLite file.
        // (Isolations only: a release checks the server and would rightly fail while it is dead.)
        setup.server.signal(SIGKILL)
        setup.server.wait(timeout: 5)
        try Self.local(setup, "isolate", reason: "server dead")
        try Self.local(setup, "isolate", reason: "server dead, again (a recorded no-op)")
        setup.server = try f.startServer()
        try Self.local(setup, "release", reason: "server back")
        #expect(try Self.converged(setup, id, timeout: 20), Comment(rawValue: Self.describe(setup, id)))

        // The agent killed right after writing entries: it resends from the server's acknowledgement.
        try Self.churn(setup, rounds: 1)
        setup.agent!.signal(SIGKILL)
        setup.agent!.wait(timeout: 5)
        setup.agent = try f.startAgent(f.a, secretFile: nil)
        try Self.churn(setup, rounds: 1)
        #expect(try Self.converged(setup, id, timeout: 20), Comment(rawValue: Self.describe(setup, id)))

        // PostgreSQL crashes under the server and comes back. (A release meanwhile would fail its
        // check, rightly: a server without its database cannot answer an authenticated request.)
        f.postgres.crash()
        try Self.local(setup, "isolate", reason: "while PostgreSQL is down")
        try f.postgres.start()
        try Self.local(setup, "release", reason: "PostgreSQL is back")
        #expect(try Self.converged(setup, id, timeout: 40), Comment(rawValue: Self.describe(setup, id) + setup.agentLog))
        #expect(try f.postgres.psql("SELECT count(*) FROM decision_log") == String(try Self.logs(setup, id).agent.count))

        // Flows: the server's copy has the agent's aggregates with their totals.
        try setup.lab.run(f.a, ["socat", "-u", "OPEN:/dev/null", "TCP4:\(F.web):443,connect-timeout=1"])
        let deadline = Date().addingTimeInterval(20)
        var matched = false
        var seen = ""
        while Date() < deadline && !matched {
            let agent = try setup.lab.flows(f.cordonBinary, database: f.directory(of: f.a) + "/cordon.db")
                .filter { $0.remote == F.web }.map { "\($0.direction ?? "")|\($0.remotePort ?? 0)|\($0.connections)" }
            let answer = try f.api("GET", "/api/v1/hosts/\(id)/flows", token: setup.viewer)
            let server = ((try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]]) ?? [])
                .filter { $0["remote_address"] as? String == F.web }.map { "\($0["direction"] ?? "")|\($0["remote_port"] ?? 0)|\($0["connections"] ?? -1)" }
            matched = !agent.isEmpty && agent.sorted() == server.sorted()
            seen = "agent \(agent.sorted()), server \(server.sorted())"
            if !matched { usleep(300_000) }
        }
        #expect(matched, "the server's flows match the agent's: \(seen)")
    }

    @Test("two replicas: a request on one reaches the agent connected to the other at once (LISTEN/NOTIFY, not the poll's timeout or the next report)")
    func twoReplicas() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        _ = try setup.fleet.startServer(port: 8444, name: "2")
        // The agent polls replica 1 only. Without the notification, a request on replica 2 reaches
        // it with the answer to a report: the one that follows each change (within a quarter
        // second, so the rounds wait that out), or the one every 5 s. Four rounds taking under 5 s
        // together can include at most one such report, so at least three came by NOTIFY.
        var took = 0.0
        for (round, state) in ["isolated", "released", "isolated", "released"].enumerated() {
            usleep(600_000)
            let started = Date()
            let body = #"{"state":"\#(state)","reason":"via replica 2, round \#(round)"}"#
            let answer = try setup.fleet.api("POST", "/api/v1/hosts/\(id)/isolation", token: setup.responder, body: body, port: 8444)
            #expect(answer.status == 202, "\(answer)")
            let intent = try #require(try setup.json(answer.body)["intent_id"] as? String)
            let done = try setup.settle(intent, timeout: 30)
            #expect(done["status"] as? String == "succeeded", "round \(round): \(done)")
            took += Date().timeIntervalSince(started)
        }
        #expect(took < 5, "four rounds took \(took) s: the agent learned of them from its reports, not from a notification")
    }

    @Test("a revoked host is refused, and says so in cordon status")
    func revocation() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        let revoke = try setup.lab.run(f.server, [f.serverBinary, "host", "revoke", id, "--data", f.data, "--database", f.postgres.url])
        #expect(revoke.succeeded, "\(revoke.stderr)")
        let deadline = Date().addingTimeInterval(15)
        var fleet: [String: Any] = [:]
        while Date() < deadline {
            fleet = (try setup.status(f.a)["fleet"] as? [String: Any]) ?? [:]
            if fleet["revoked"] as? Bool == true { break }
            usleep(200_000)
        }
        #expect(fleet["revoked"] as? Bool == true, "\(fleet)")
        let text = try setup.lab.run(nil, [f.cordonBinary, "status", "--socket", f.directory(of: f.a) + "/cordon.sock"])
        #expect(text.stdout.contains("REVOKED"), Comment(rawValue: text.stdout))
        let host = try setup.host(id)
        #expect(host["revoked"] as? Bool == true && host["connected"] as? Bool == false)
        let refused = try f.api("POST", "/api/v1/hosts/\(id)/isolation", token: setup.responder, body: #"{"state":"isolated","reason":"x"}"#)
        #expect(refused.status == 409, "\(refused)")
    }

    @Test("a local isolation while the server is unreachable is reported when it reconnects and kept")
    func localIsolationIsKept() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        // The server's namespace drops everything from host a: established connections too.
        let block = "table inet cut {\n chain input {\n  type filter hook input priority -50;\n  ip saddr \(F.hostA) drop\n }\n}\n"
        #expect(try setup.lab.run(f.server, ["nft", "-f", "-"], input: block).succeeded)
        let dir = f.directory(of: f.a)
        let isolate = try setup.lab.run(nil, [f.cordonBinary, "isolate", "--operator", "ivy", "--reason", "local emergency",
                                              "--socket", dir + "/cordon.sock", "--db", dir + "/cordon.db"], timeout: 30)
        #expect(isolate.succeeded, "\(isolate.stdout)\(isolate.stderr)")
        usleep(2_000_000)
        #expect(try setup.lab.run(f.server, ["nft", "delete", "table", "inet", "cut"]).succeeded)
        let deadline = Date().addingTimeInterval(40)
        var isolation: [String: Any] = [:]
        while Date() < deadline {
            isolation = (try setup.host(id)["isolation"] as? [String: Any]) ?? [:]
            if isolation["desired"] as? String == "isolated" { break }
            usleep(200_000)
        }
        #expect(isolation["desired"] as? String == "isolated" && isolation["observed"] as? String == "isolated", "\(isolation)\n\(setup.agentLog)")
        let intents = try setup.json(try f.api("GET", "/api/v1/intents?host_id=\(id)", token: setup.viewer).body)["items"] as? [[String: Any]] ?? []
        #expect(intents.first?["requested_by"] as? String == "ivy" && intents.first?["origin"] as? String == "local"
                && intents.first?["kind"] as? String == "isolation" && intents.first?["status"] as? String == "succeeded", "\(intents)")
        usleep(1_000_000)
        #expect(try setup.status(f.a)["isolated"] as? Bool == true, "the local isolation stands")
        #expect(!(try setup.webReachable()))
    }

    @Test("a remote release whose authenticated check cannot reach the server isolates again, and the intent fails with that reason")
    func failedReleaseCheck() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 10)
        let f = setup.fleet
        let isolate = try setup.request(id, "isolated", reason: "alert")
        #expect(try setup.settle(try #require(isolate["intent_id"] as? String), timeout: 10)["status"] as? String == "succeeded")
        // New connections to the server are dropped; the open ones (the poll, the reports) go on.
        let block = "table inet cut {\n chain input {\n  type filter hook input priority -50;\n  ip saddr \(F.hostA) ct state new tcp dport \(F.port) drop\n }\n}\n"
        #expect(try setup.lab.run(f.server, ["nft", "-f", "-"], input: block).succeeded)
        let release = try setup.request(id, "released", reason: "try")
        let done = try setup.settle(try #require(release["intent_id"] as? String), timeout: 40)
        #expect(done["status"] as? String == "failed", "\(done)\n\(setup.agentLog)")
        #expect((done["error"] as? String)?.contains("authenticated") == true, "\(done)")
        #expect(try setup.status(f.a)["isolated"] as? Bool == true, "isolated again")
        #expect(!(try setup.webReachable()))
    }
}
