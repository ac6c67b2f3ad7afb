import CordonCore
import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The server's database restored from a real `pg_dump` taken before a rollout's end, an
/// isolate/release cycle and a policy version, with three real agents (issue 22).
@Suite(.serialized) struct FleetRestoreTests {
    typealias F = FleetScenario
    typealias Tier = FleetRolloutTests.Tier

    @Test("after a restore from an older backup every host takes remote intents again, keeps its isolation and policy, the rollout the backup held as running halts without being carried on or reverted, and the decision logs and flows come back whole")
    func restoreFromAnOlderBackup() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        var t = try Tier()
        defer { t.setup.lab.cleanup() }
        let f = t.f, s = t.setup
        let (a, b, c) = (t.ids["web-a"]!, t.ids["web-b"]!, t.ids["web-c"]!)
        let v1 = try t.assignWeb(file: "v1.yaml")

        // The backup: rollout R1 soaking after its first wave (web-a enforces v1). Its soak is
        // over by the time the server is back: the restored record would start its next wave.
        let r1 = try t.start(["--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "20s", "--confirm-window", "30s"])
        let soaking = try t.wait(r1, timeout: 60) { ($0["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking" }
        #expect((soaking["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking", "\(soaking)")
        #expect(try t.inForce(f.a) == v1)
        let backup = s.lab.directory + "/cordon.dump"
        try f.postgres.dump(to: backup)

        // After it: R1 aborted (web-a back to discovery), version 2 approved and rolled out to
        // every host, web-b isolated and released, web-c isolated, web-a using the web service.
        #expect(try f.fleet(["rollout", "abort", r1, "--reason", "not yet"], token: t.approver).succeeded)
        #expect(try t.waitInForce(f.a, nil, timeout: 30), "the abort put web-a back")
        try t.approve(FleetRolloutTests.ruleset(web: true, ntp: true), file: "v2.yaml")
        let v2 = try t.assigned()
        #expect(v2 != v1)
        let r2 = try t.start(["--selector", #"tier == "web""#, "--waves", "100%", "--soak", "1s", "--confirm-window", "30s"])
        let done = try t.wait(r2, timeout: 90) { $0["state"] as? String != "running" }
        #expect(done["state"] as? String == "succeeded", "\(done)")
        for host in [f.a, f.b, f.c] { #expect(try t.inForce(host) == v2) }
        for (host, state) in [(b, "isolated"), (b, "released"), (c, "isolated")] {
            let intent = try #require(try s.request(host, state, reason: "after the backup")["intent_id"] as? String)
            #expect(try s.settle(intent, timeout: 20)["status"] as? String == "succeeded")
        }
        for _ in 0..<3 { #expect(try s.webReachable()) }
        func webConnections() throws -> Int {
            let body = try f.api("GET", "/api/v1/hosts/\(a)/flows", token: s.viewer).body
            let rows = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]] ?? []
            return rows.filter { $0["remote_address"] as? String == F.web }.compactMap { $0["connections"] as? Int }.max() ?? 0
        }
        func logOf(_ id: String) throws -> (entries: Int, intact: Bool) {
            let log = try s.json(try f.api("GET", "/api/v1/hosts/\(id)/log", token: s.viewer).body)
            let verification = log["verification"] as? [String: Any]
            return (verification?["entries"] as? Int ?? -1, verification?["intact"] as? Bool == true)
        }
        var before = (connections: 0, logA: 0, logB: 0)
        let uploaded = Date().addingTimeInterval(30)
        repeat {
            before = (try webConnections(), try logOf(a).entries, try logOf(b).entries)
            if before.connections < 3 { usleep(300_000) }
        } while before.connections < 3 && Date() < uploaded
        #expect(before.connections >= 3, "web-a's connections to the web service are on the server")

        // The database restored from the backup under a stopped server.
        s.lab.stop(s.server, signal: SIGKILL, timeout: 10)
        try f.postgres.restore(from: backup)
        t.setup.server = try f.startServer()

        // R1 was running in the backup: halted, neither carried on to web-b and web-c nor reverted.
        let halted = try t.wait(r1, timeout: 90) { $0["state"] as? String != "running" }
        #expect(halted["state"] as? String == "halted", "\(halted)")
        #expect((halted["halt_reason"] as? String)?.contains("restored from an older backup") == true, "\(halted)")
        #expect(halted["current_wave"] as? Int == 1, "still its first wave (the view counts from 1)")
        let states = (halted["hosts"] as? [[String: Any]] ?? []).map { "\($0["hostname"] ?? "")=\($0["state"] ?? "")" }
        #expect(states == ["web-a=confirmed", "web-b=waiting", "web-c=waiting"], "\(states)")
        for host in [f.a, f.b, f.c] { #expect(try t.inForce(host) == v2, "every host keeps the policy the restore lost") }
        #expect(try s.status(f.c)["isolated"] as? Bool == true, "web-c stays isolated")
        #expect(try s.status(f.b)["isolated"] as? Bool == false)

        // Each host re-based, and the audit log says what the restore lost.
        var rebases: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(60)
        repeat {
            let audit = try s.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []
            rebases = audit.filter { $0["action"] as? String == "restore re-base" }
            if rebases.count < 3 { usleep(300_000) }
        } while rebases.count < 3 && Date() < deadline
        #expect(Set(rebases.compactMap { $0["target"] as? String }) == [a, b, c], "\(rebases)")
        #expect(rebases.allSatisfy { ($0["detail"] as? String)?.contains("enforces policy \(v2), which this database does not hold") == true },
                "\(rebases)")

        // Remote intents reach the hosts again: web-c released, web-a isolated and released.
        let timed = Date()
        for (host, state) in [(c, "released"), (a, "isolated"), (a, "released")] {
            let intent = try #require(try s.request(host, state, reason: "after the restore")["intent_id"] as? String)
            let settled = try s.settle(intent, timeout: 20)
            #expect(settled["status"] as? String == "succeeded", "\(host) \(state): \(settled)")
        }
        #expect(try s.status(f.c)["isolated"] as? Bool == false)
        #expect(Date().timeIntervalSince(timed) < 20)

        // The logs and flows the restore lost come back from the agents; the chains check out.
        var after = (connections: 0, logA: (entries: 0, intact: false), logB: (entries: 0, intact: false))
        let refilled = Date().addingTimeInterval(60)
        repeat {
            after = (try webConnections(), try logOf(a), try logOf(b))
            if after.connections < before.connections || after.logA.entries < before.logA || after.logB.entries < before.logB { usleep(300_000) }
        } while (after.connections < before.connections || after.logA.entries < before.logA || after.logB.entries < before.logB) && Date() < refilled
        #expect(after.connections >= before.connections, "the flow's totals are back: \(after.connections) of \(before.connections)")
        #expect(after.logA.entries >= before.logA && after.logB.entries >= before.logB, "\(after) against \(before)")
        #expect(after.logA.intact && after.logB.intact)
    }
}
