import CordonLab
import CordonStore
import Foundation
import Testing
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

        init(agentA: Bool = true) throws {
            lab = try Lab()
            do {
                fleet = try FleetScenario(lab: lab)
                server = try fleet.startServer()
                responder = try fleet.token(role: "responder", name: "rita")
                viewer = try fleet.token(role: "viewer", name: "vic")
                if agentA {
                    agent = try fleet.startAgent(fleet.a, secretFile: try fleet.enrollSecret(tags: "tier=web"))
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
        setup.agent = try setup.fleet.startAgent(setup.fleet.a, secretFile: nil)
        usleep(1_000_000)
        #expect(try setup.hosts().count == 1)
        #expect(try setup.hostID(timeout: 10) == id)

        // A used-up secret admits nobody.
        let single = try setup.fleet.enrollSecret(uses: 1)
        let secret = try String(contentsOfFile: single, encoding: .utf8)
        let body = #"{"secret":"\#(secret)","hostname":"x","machine_id":"m","addresses":[],"agent_version":"t","tags":{}}"#
        #expect(try setup.fleet.api("POST", "/agent/v1/enroll", token: nil, body: body).status == 201)
        let again = try setup.fleet.api("POST", "/agent/v1/enroll", token: nil, body: body)
        #expect(again.status == 403 && again.body.contains("secret"), "\(again)")
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
        #expect(try f.api("GET", "/agent/v1/desired", token: credential).status == 200)
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
        // Every change is audited: the refused ones are not changes.
        let audit = try f.api("GET", "/api/v1/audit", token: f.adminToken)
        #expect(audit.status == 200)
        #expect(try f.api("GET", "/api/v1/audit", token: setup.responder).status == 403)
    }
}
