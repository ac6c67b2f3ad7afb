import CordonCore
import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Rollouts with a real server, PostgreSQL and three real agents in namespaces, tagged by tier and
/// env: waves that proceed, a regression and a host cut off from the server that halt them, a
/// kill -9 of the server mid-rollout, discovery in waves, and a viewer refused.
@Suite(.serialized) struct FleetRolloutTests {
    typealias F = FleetScenario
    typealias Setup = FleetTests.Setup

    /// web-a (env canary), web-b and web-c (env prod), all tier web; web-a has reached the web service.
    struct Tier {
        var setup: Setup
        let approver: String
        let ids: [String: String]
        var f: FleetScenario { setup.fleet }

        init(replicated: Bool = false) throws {
            setup = try Setup(agentA: false, replicated: replicated)
            let f = setup.fleet
            do {
                approver = try f.token(role: "approver", name: "apollo")
                var agents: [Child] = []
                for (host, name, env) in [(f.a, "web-a", "canary"), (f.b, "web-b", "prod"), (f.c, "web-c", "prod")] {
                    agents.append(try f.startAgent(host, secretFile: try f.enrollSecret(tags: "tier=web,env=\(env)"), hostname: name))
                }
                setup.agent = agents[0]
                var ids: [String: String] = [:]
                let deadline = Date().addingTimeInterval(20)
                while ids.count < 3 && Date() < deadline {
                    for host in try setup.hosts() where host["connected"] as? Bool == true {
                        if let name = host["hostname"] as? String, let id = host["id"] as? String { ids[name] = id }
                    }
                    if ids.count < 3 { usleep(200_000) }
                }
                guard ids.count == 3 else { throw LabError("three hosts did not connect: \(ids)") }
                self.ids = ids
            } catch {
                setup.lab.cleanup()
                throw error
            }
        }

        func rollout(_ id: String) throws -> [String: Any] {
            let answer = try f.api("GET", "/api/v1/rollouts/\(id)", token: setup.viewer)
            guard answer.status == 200 else { throw LabError("rollout \(id): \(answer)") }
            return try setup.json(answer.body)
        }

        /// Polls the rollout until `done` says so; its last view.
        func wait(_ id: String, timeout: Double, until done: ([String: Any]) -> Bool) throws -> [String: Any] {
            let deadline = Date().addingTimeInterval(timeout)
            var view = try rollout(id)
            while !done(view) && Date() < deadline {
                usleep(250_000)
                view = try rollout(id)
            }
            return view
        }

        func start(_ arguments: [String]) throws -> String {
            let started = try f.fleet(["rollout", "start"] + arguments + ["--json"], token: approver)
            guard started.succeeded, let id = try setup.json(started.stdout)["id"] as? String else { throw LabError("rollout start: \(started)") }
            return id
        }

        func approve(_ text: String, file: String) throws {
            let path = setup.lab.directory + "/" + file
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            let approved = try f.fleet(["approve", path, "--name", "web"], token: approver)
            guard approved.succeeded else { throw LabError("approve: \(approved)") }
        }

        /// The starting point of most scenarios: a version that allows web, approved and assigned
        /// to the tier (nothing enforces it yet); its digest.
        func assignWeb(file: String = "web.yaml") throws -> String {
            try approve(FleetRolloutTests.ruleset(web: true), file: file)
            let assigned = try f.fleet(["assign", "web", "--selector", #"tier == "web""#], token: approver)
            guard assigned.succeeded else { throw LabError("assign: \(assigned)") }
            return try self.assigned()
        }

        /// The digest of the effective policy the tier's assignment gives web-a now.
        func assigned() throws -> String {
            let policy = try setup.host(ids["web-a"]!)["policy"] as? [String: Any]
            guard let digest = (policy?["assigned"] as? [String: Any])?["digest"] as? String else { throw LabError("no assigned policy: \(policy ?? [:])") }
            return digest
        }

        /// The digest of the policy `host`'s document asks for.
        func desired(_ name: String) throws -> String? { (try setup.host(ids[name]!)["policy"] as? [String: Any])?["desired_digest"] as? String }
        func generation(_ name: String) throws -> Int? { (try setup.host(ids[name]!)["isolation"] as? [String: Any])?["generation"] as? Int }
        func inForce(_ host: String) throws -> String? {
            let status = try setup.status(host)
            return status["mode"] as? String == "enforce" ? (status["ruleset"] as? [String: Any])?["digest"] as? String : nil
        }

        func waitInForce(_ host: String, _ digest: String?, timeout: Double) throws -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try inForce(host) == digest { return true }
                usleep(250_000)
            }
            return false
        }
    }

    static func ruleset(web: Bool, ntp: Bool = false) -> String {
        var networks = """
            name: web
            appliesTo: 'tier == "web"'
            networks:
              - name: resolver
                entries: [\(F.serverA), \(F.serverB)]
                services: [udp/53, tcp/53]

            """
        var outgoing = "outgoing:\n  - to: resolver\n"
        if web {
            networks += "  - name: web\n    entries: [\(F.web)]\n    services: [tcp/443]\n"
            outgoing += "  - to: web\n"
        }
        if ntp {
            networks += "  - name: time\n    entries: [\(F.serverA)]\n    services: [udp/123]\n"
            outgoing += "  - to: time\n"
        }
        return networks + outgoing
    }

    @Test("a rollout's first wave confirms and the next proceeds; a regression on the first host halts it and puts that host back, the others untouched")
    func wavesAndRegression() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let t = try Tier()
        defer { t.setup.lab.cleanup() }
        let f = t.f
        #expect(try t.setup.webReachable())
        // The record: web-a reached the web service, and the server has the flow.
        let uploaded = Date().addingTimeInterval(30)
        var seen = false
        while !seen && Date() < uploaded {
            seen = try f.api("GET", "/api/v1/hosts/\(t.ids["web-a"]!)/flows", token: t.setup.viewer).body.contains("\"\(F.web)\"")
            if !seen { usleep(300_000) }
        }
        #expect(seen, "web-a uploaded its flow to the web service")

        let v1 = try t.assignWeb()
        // A viewer starts, halts, resumes and aborts nothing.
        for arguments in [["rollout", "start", "--selector", #"tier == "web""#], ["discover", "--selector", #"tier == "web""#],
                          ["rollout", "halt", UUID().uuidString], ["rollout", "resume", UUID().uuidString], ["rollout", "abort", UUID().uuidString]] {
            let denied = try f.fleet(arguments, token: t.setup.viewer)
            #expect(denied.status == 1 && denied.stderr.contains("approver"), "\(arguments): \(denied)")
        }

        let first = try t.start(["--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "2s", "--confirm-window", "30s"])
        let done = try t.wait(first, timeout: 120) { $0["state"] as? String != "running" }
        #expect(done["state"] as? String == "succeeded", "\(done)")
        let hosts = done["hosts"] as? [[String: Any]] ?? []
        #expect(hosts.map { $0["hostname"] as? String } == ["web-a", "web-b", "web-c"] && hosts.allSatisfy { $0["state"] as? String == "confirmed" })
        let waves = done["waves"] as? [[String: Any]] ?? []
        let confirmedA = hosts.first?["changed_at"] as? String ?? "~"
        #expect(waves.count == 2 && (waves.last?["started_at"] as? String ?? "") >= confirmedA,
                "the second wave started only after web-a confirmed: \(waves) \(hosts)")
        for host in [f.a, f.b, f.c] { #expect(try t.inForce(host) == v1, "every host enforces the tier's policy") }
        #expect(try t.setup.webReachable(), "the policy allows what web-a needs")
        for name in ["web-a", "web-b", "web-c"] {
            #expect((try t.setup.host(t.ids[name]!)["policy"] as? [String: Any])?["sync"] as? String == "in_sync")
        }
        let log = try t.setup.lab.run(nil, [f.cordonBinary, "log", "--json", "--db", f.directory(of: f.a) + "/cordon.db"])
        #expect(log.stdout.contains("\"confirm\"") && log.stdout.contains("cordon-server: intent"), "web-a confirmed by itself, named after the intent")

        // Version 2 leaves the web service out: web-a's record shows it used it.
        try t.approve(Self.ruleset(web: false), file: "narrow.yaml")
        let v2 = try t.assigned()
        #expect(v2 != v1)
        #expect(try t.desired("web-b") == v1, "a new version changes no document before a rollout")
        let (genB, genC) = (try t.generation("web-b"), try t.generation("web-c"))
        let second = try t.start(["--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "60s", "--confirm-window", "30s"])
        #expect(try t.waitInForce(f.a, v2, timeout: 40), "web-a enforces version 2")
        #expect(!(try t.setup.webReachable()), "version 2 rejects the web service")
        let halted = try t.wait(second, timeout: 40) { $0["state"] as? String != "running" }
        #expect(halted["state"] as? String == "halted", "\(halted)")
        let reason = halted["halt_reason"] as? String ?? ""
        #expect(reason.hasPrefix("host web-a: regression: rejected outbound tcp to \(F.web):443"), "\(reason)")
        #expect(try t.waitInForce(f.a, v1, timeout: 40), "web-a went back to what it ran before")
        #expect(try t.setup.webReachable())
        #expect(try t.generation("web-b") == genB && t.generation("web-c") == genC, "hosts not reached are untouched")
        #expect(try t.inForce(f.b) == v1 && t.inForce(f.c) == v1)
        let aborted = try f.fleet(["rollout", "abort", second, "--reason", "v2 breaks the web service"], token: t.approver)
        #expect(aborted.succeeded && aborted.stdout.contains("aborted"), "\(aborted)")
        let audit = try t.setup.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []
        #expect(Set(audit.compactMap { $0["action"] as? String }).isSuperset(of: ["rollout-start", "rollout-halted", "rollout-abort"]))

        // Drift: `nft flush ruleset` on web-c. The guard puts the tables back; the server shows it
        // within 60 s, and says why when it keeps happening.
        let flushed = Date()
        var restoresSeen = 0
        for _ in 0..<3 {
            #expect(try t.setup.lab.run(f.c, ["nft", "flush", "ruleset"]).succeeded)
            #expect(try t.waitInForce(f.c, v1, timeout: 10), "the guard restored web-c's tables")
            usleep(500_000)
        }
        var view: [String: Any] = [:]
        while Date().timeIntervalSince(flushed) < 60 {
            view = try t.setup.host(t.ids["web-c"]!)
            restoresSeen = view["guard_restores"] as? Int ?? 0
            if restoresSeen >= 3 && view["guard_hint"] is String { break }
            usleep(500_000)
        }
        #expect(restoresSeen >= 3 && view["last_guard_restore"] is String, "\(view)")
        #expect((view["policy"] as? [String: Any])?["sync"] as? String == "drift", "\(view)")
        #expect((view["guard_hint"] as? String)?.contains("another program keeps reloading nftables") == true, "\(view)")
        #expect((try t.setup.host(t.ids["web-b"]!)["policy"] as? [String: Any])?["sync"] as? String == "pending", "web-b: version 2 assigned, not rolled out")
    }

    @Test("a host that cannot reach the server through its new rules rolls back and halts the rollout; a kill -9 of the server mid-rollout loses nothing; discovery goes in waves")
    func cutOffKilledAndDiscovery() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        var t = try Tier()
        defer { t.setup.lab.cleanup() }
        let f = t.f
        let v1 = try t.assignWeb()

        // web-b's new connections to the server are dropped by a table of someone else's: the
        // connections it holds go on, the round trip a confirmation needs does not.
        let block = try t.setup.lab.run(f.b, ["nft", """
            add table inet cut; add chain inet cut out { type filter hook output priority 10; }; \
            add rule inet cut out ip daddr \(F.serverB) tcp dport \(F.port) ct state new drop
            """])
        #expect(block.succeeded, "\(block.stderr)")
        let genC = try t.generation("web-c")
        let cut = try t.start(["--selector", #"env == "prod""#, "--waves", "1,100%", "--soak", "0s", "--confirm-window", "20s"])
        let halted = try t.wait(cut, timeout: 60) { $0["state"] as? String != "running" }
        #expect(halted["state"] as? String == "halted", "\(halted)")
        let reason = halted["halt_reason"] as? String ?? ""
        #expect(reason.hasPrefix("host web-b rolled back: ") && reason.contains("did not answer an authenticated request"), "\(reason)")
        #expect(try t.inForce(f.b) == nil, "web-b is back in discovery")
        #expect(try t.generation("web-c") == genC, "web-c, in the next wave, is untouched")
        _ = try t.setup.lab.run(f.b, ["nft", "delete table inet cut"])
        #expect(try f.fleet(["rollout", "abort", cut], token: t.approver).succeeded)

        // kill -9 of the server while the first wave soaks; a new server goes on from PostgreSQL.
        let killed = try t.start(["--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "6s", "--confirm-window", "30s"])
        let soaking = try t.wait(killed, timeout: 60) { ($0["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking" }
        #expect((soaking["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking", "\(soaking)")
        t.setup.lab.stop(t.setup.server, signal: SIGKILL, timeout: 10)
        #expect(try t.inForce(f.a) == v1, "the confirmed host keeps its rules with the server gone")
        t.setup.server = try f.startServer()
        let resumed = try t.wait(killed, timeout: 120) { $0["state"] as? String != "running" }
        #expect(resumed["state"] as? String == "succeeded", "\(resumed)")
        for host in [f.a, f.b, f.c] { #expect(try t.inForce(host) == v1) }

        // Back to discovery, in waves, for the prod hosts only.
        let back = try f.fleet(["discover", "--selector", #"env == "prod""#, "--waves", "1,100%", "--soak", "0s", "--json"], token: t.approver)
        let id = try #require(try? t.setup.json(back.stdout)["id"] as? String, "\(back)")
        let discovered = try t.wait(id, timeout: 60) { $0["state"] as? String != "running" }
        #expect(discovered["state"] as? String == "succeeded" && discovered["mode"] as? String == "discovery", "\(discovered)")
        #expect(try t.inForce(f.b) == nil && t.inForce(f.c) == nil && t.inForce(f.a) == v1)

        // On a managed host the server is the source of truth: local mode changes and approvals
        // are refused unless they say they override it; a local isolation always works.
        let socket = f.directory(of: f.a) + "/cordon.sock", database = f.directory(of: f.a) + "/cordon.db"
        let local = { (arguments: [String]) throws -> CommandResult in try t.setup.lab.run(f.a, [f.cordonBinary] + arguments, timeout: 60) }
        let refused = try local(["discover", "--operator", "ivy", "--socket", socket])
        #expect(refused.status == 1 && refused.stderr.contains("come from cordon-server"), "\(refused)")
        let approve = try local(["approve", t.setup.lab.directory + "/web.yaml", "--operator", "ivy", "--db", database])
        #expect(approve.status == 1 && approve.stderr.contains("cordon fleet approve"), "\(approve)")
        #expect(try t.inForce(f.a) == v1, "nothing changed")
        #expect(try local(["isolate", "--operator", "ivy", "--reason", "local emergency", "--socket", socket]).succeeded)
        #expect(try local(["release", "--operator", "ivy", "--reason", "done", "--socket", socket]).succeeded)
        let overridden = try local(["discover", "--operator", "ivy", "--override-server", "--socket", socket])
        #expect(overridden.succeeded, "\(overridden)")
        let drifted = Date().addingTimeInterval(20)
        var sync = ""
        while sync != "drift" && Date() < drifted {
            sync = (try t.setup.host(t.ids["web-a"]!)["policy"] as? [String: Any])?["sync"] as? String ?? ""
            if sync != "drift" { usleep(250_000) }
        }
        #expect(sync == "drift", "the server shows the override")
    }
}
