import CordonCore
import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's own failover under a running fleet (issue 22): a primary and a synchronous
/// streaming standby in namespaces of their own, the primary killed (kill -9) mid-rollout, the
/// standby promoted and the service address moved, the server left to reconnect by itself.
@Suite(.serialized) struct FleetFailoverTests {
    typealias Tier = FleetRolloutTests.Tier

    @Test("kill -9 of the primary mid-rollout, the standby promoted by a command: the server reconnects by itself, a remote isolation succeeds within 15 s, the rollout resumes, and nothing acknowledged is lost")
    func failover() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let t = try Tier(replicated: true)
        defer { t.setup.lab.cleanup() }
        let f = t.f, s = t.setup
        let (b, c) = (t.ids["web-b"]!, t.ids["web-c"]!)
        let v1 = try t.assignWeb(file: "v1.yaml")
        let rollout = try t.start(["--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "8s", "--confirm-window", "30s"])
        let soaking = try t.wait(rollout, timeout: 60) { ($0["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking" }
        #expect((soaking["waves"] as? [[String: Any]])?.first?["state"] as? String == "soaking", "\(soaking)")

        // Acknowledged just before the primary dies: an isolation, with the audit entry it made.
        let acknowledged = try #require(try s.request(b, "isolated", reason: "acknowledged before the failover")["intent_id"] as? String)
        #expect(try s.settle(acknowledged, timeout: 20)["status"] as? String == "succeeded")
        let audited = try s.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []

        let killed = Date()
        try f.failover()
        var accepted: [String: Any]?
        while accepted == nil && Date().timeIntervalSince(killed) < 60 {
            let answer = try f.api("POST", "/api/v1/hosts/\(c)/isolation", token: s.responder, body: #"{"state":"isolated","reason":"after the failover"}"#)
            if answer.status == 202 { accepted = try s.json(answer.body) } else { usleep(100_000) }
        }
        let intent = try #require(accepted?["intent_id"] as? String, "no isolation accepted within 60 s of the failover")
        #expect(try s.settle(intent, timeout: 20)["status"] as? String == "succeeded")
        let took = Date().timeIntervalSince(killed)
        #expect(took < 15, "from the kill to a remote isolation done: \(took) s")
        #expect(try s.status(f.c)["isolated"] as? Bool == true)
        #expect(try f.standby!.psql("SELECT pg_is_in_recovery()") == "f", "the standby is the primary now")

        // Nothing acknowledged is lost: the intent and its audit entry are on the new primary.
        #expect(try s.intent(acknowledged)["status"] as? String == "succeeded")
        let after = try s.json(try f.api("GET", "/api/v1/audit", token: f.adminToken).body)["items"] as? [[String: Any]] ?? []
        let ids = Set(after.compactMap { $0["id"] as? Int })
        #expect(audited.allSatisfy { ids.contains($0["id"] as? Int ?? -1) }, "every audit entry from before the failover is there")

        // The rollout goes on from where the old primary left it.
        let done = try t.wait(rollout, timeout: 120) { $0["state"] as? String != "running" }
        #expect(done["state"] as? String == "succeeded", "\(done)")
        for host in [f.a, f.b, f.c] { #expect(try t.inForce(host) == v1) }
        for host in [b, c] {
            let release = try #require(try s.request(host, "released", reason: "done")["intent_id"] as? String)
            #expect(try s.settle(release, timeout: 20)["status"] as? String == "succeeded")
        }
    }
}
