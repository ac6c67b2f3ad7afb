import CordonCore
import CordonServer
import CordonWire
import Foundation
import Hummingbird
import Testing

/// `/agent/v1`: enrollment, the long poll, the report.
@Suite struct AgentRouteTests {
    static func enrollment(secret: String, hostname: String = "web-1") -> String {
        TestServer.object(["secret": secret, "hostname": hostname, "machine_id": "m-1", "addresses": ["192.0.2.10"], "agent_version": "0.3.0",
                           "tags": ["role": "web"]])
    }

    @Test func enrollmentIsValidatedAndRefusedSecretsAreAudited() async throws {
        try await withServer { s in
            let secret = try await s.stores.enrollment.createSecret(tags: ["env": "prod"], ttlSeconds: nil, uses: 1, hostTags: true, extraWhitelist: [])
            let nul = try await s.post("/agent/v1/enroll", token: nil, Self.enrollment(secret: secret, hostname: "web\u{0}1"))
            #expect(nul.status == .badRequest)
            #expect(nul.field == "hostname")
            let empty = try await s.post("/agent/v1/enroll", token: nil, Self.enrollment(secret: secret, hostname: ""))
            #expect(empty.status == .unprocessableContent)
            #expect(empty.field == "hostname")
            #expect(empty.error == "expected 1-253 characters")
            let missing = try await s.post("/agent/v1/enroll", token: nil, #"{"secret":"x"}"#)
            #expect(missing.status == .badRequest)
            #expect(missing.field == "hostname")
            // The refusals above used nothing of the secret.
            #expect(try await s.stores.audit.entries(limit: 10).isEmpty)

            let wrong = try await s.post("/agent/v1/enroll", token: nil, Self.enrollment(secret: Credential.generate(.enrollSecret)))
            #expect(wrong.status == .forbidden)
            #expect(wrong.field == "secret")
            #expect(wrong.error == "the enrollment secret is not valid (unknown, expired, used up or revoked)")
            #expect(try await s.stores.audit.entries(limit: 1).first?.action == "enroll refused")

            let enrolled = try await s.post("/agent/v1/enroll", token: nil, Self.enrollment(secret: secret))
            #expect(enrolled.status == .created)
            let id = try #require(enrolled["host_id"] as? String)
            #expect(Credential.kind(of: enrolled["credential"] as? String ?? "") == .host)
            let audit = try #require(try await s.stores.audit.entries(limit: 1).first)
            #expect(audit.action == "enroll")
            #expect(audit.target == id)
            let shown = try await s.get("/api/v1/hosts/\(id)", token: s.viewer)
            #expect(shown["tags"] as? [String: String] == ["env": "prod", "role": "web"])
            #expect(shown["tag_sources"] as? [String: String] == ["env": "secret", "role": "host"])

            // One use: the second host is refused.
            let again = try await s.post("/agent/v1/enroll", token: nil, Self.enrollment(secret: secret, hostname: "web-2"))
            #expect(again.status == .forbidden)
            #expect(again.field == "secret")
        }
    }

    @Test func theLongPollAnswersTheDocument() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let state = try await s.get("/agent/v1/state?after=0&wait=0", token: host.credential)
            #expect(state.status == .ok)
            #expect(state["generation"] as? Int == 0)
            #expect((state["isolation"] as? [String: Any])?["state"] as? String == "released")
            #expect(state.json.keys.contains("policy"))

            let intent = try #require(try await s.isolate(host.id, reason: "incident 9")["intent_id"] as? String)
            let changed = try await s.get("/agent/v1/state?after=0&wait=0", token: host.credential)
            #expect(changed["generation"] as? Int == 1)
            let isolation = try #require(changed["isolation"] as? [String: Any])
            #expect(isolation["state"] as? String == "isolated")
            #expect(isolation["intent_id"] as? String == intent)
            #expect(isolation["requested_by"] as? String == "rita")

            // Agents before 0.3.0 read the isolation alone.
            let legacy = try await s.get("/agent/v1/desired?after=0&wait=0", token: host.credential)
            #expect(legacy.status == .ok)
            #expect(legacy["generation"] as? Int == 1)
            #expect(legacy["state"] as? String == "isolated")
            #expect(legacy["isolation"] == nil)
        }
    }

    @Test func longPollParametersAreChecked() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            for query in ["wait=99", "wait=-1", "wait=soon"] {
                let reply = try await s.get("/agent/v1/state?\(query)", token: host.credential)
                #expect(reply.status == .badRequest, "\(query)")
                #expect(reply.field == "wait")
                #expect(reply.error == "expected seconds from 0 to 25")
            }
            let after = try await s.get("/agent/v1/state?after=first&wait=0", token: host.credential)
            #expect(after.status == .badRequest)
            #expect(after.field == "after")
        }
    }

    /// The wake-up itself, below the route: a poll's wait ends on a change, not on its timeout.
    /// No clock and no HTTP: under `swift test` the namespace tests hold the concurrency pool's
    /// threads for long stretches, so a route-level poll can run out its time before the change
    /// is even made. A wait that missed the wake-up runs its ten minutes and answers false.
    @Test func aChangeWakesTheWaitingPoll() async throws {
        let waiters = DesiredWaiters()
        let host = UUID()
        let (registered, signal) = AsyncStream<Void>.makeStream()
        let waiting = Task { await waiters.wait(host: host, timeout: 600) { signal.finish(); return false } }
        for await _ in registered {}
        waiters.wake(host: UUID())
        waiters.wake(host: host)
        #expect(await waiting.value == true, "woken by the change, not by its timeout")
    }

    @Test func aPollAfterAChangeAnswersItAtOnce() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            #expect(try await s.isolate(host.id).status == .accepted)
            let reply = try await s.get("/agent/v1/state?after=0&wait=25", token: host.credential)
            #expect(reply.status == .ok)
            #expect(reply["generation"] as? Int == 1)
            #expect((reply.isolation)?["state"] as? String == "isolated")
        }
    }

    @Test func aPollWithNothingNewWaitsItsTime() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let started = ContinuousClock.now
            let reply = try await s.get("/agent/v1/state?after=0&wait=1", token: host.credential)
            #expect(reply.status == .ok)
            #expect(reply["generation"] as? Int == 0)
            #expect(ContinuousClock.now - started >= .milliseconds(900))
        }
    }

    @Test func aBadFlowRowIsRefusedAloneAndTheRestStored() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let flows = [TestServer.flow(remote: "198.51.100.7"), TestServer.flow(remote: "198.51.100.8", ["local_address": "not-an-address"]),
                         TestServer.flow(remote: "198.51.100.9", ["first_seen": "1999-01-01T00:00:00Z"])]
            let reply = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(flows: flows))
            #expect(reply.status == .ok)
            let refused = try #require(reply["refused_flows"] as? [[String: Any]])
            #expect(refused.map { $0["index"] as? Int } == [1, 2])
            #expect(refused.map { $0["field"] as? String } == ["local_address", "first_seen"])
            #expect(refused.first?["message"] as? String == "expected an IPv4 or IPv6 address")

            let stored = try await s.get("/api/v1/hosts/\(host.id)/flows", token: s.viewer)
            #expect(stored.status == .ok)
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(stored.text.utf8)) as? [[String: Any]])
            #expect(rows.map { $0["remote_address"] as? String } == ["198.51.100.7"])
        }
    }

    @Test func aLogSequenceBelowOneIsRefused() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let reply = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(log: [TestServer.decision(0)]))
            #expect(reply.status == .unprocessableContent)
            #expect(reply.field == "log.sequence")
            #expect(reply.error == "entry 0: sequences start at 1")
            #expect(try await s.stores.log.log(host: UUID(uuidString: host.id)!).entries.isEmpty)
        }
    }

    @Test func theLogIsStoredOnceAndAcknowledged() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let first = TestServer.decision(1)
            let second = TestServer.decision(2, after: first)
            let reply = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(log: [first, second]))
            #expect(reply.status == .ok)
            #expect(reply["log_acked_through"] as? Int == 2)
            // Sent again (the answer was lost): stored once.
            #expect(try await s.post("/agent/v1/report", token: host.credential, TestServer.report(log: [second]))["log_acked_through"] as? Int == 2)

            let log = try await s.get("/api/v1/hosts/\(host.id)/log", token: s.viewer)
            #expect(log.status == .ok)
            let verification = try #require(log["verification"] as? [String: Any])
            #expect(verification["intact"] as? Bool == true)
            #expect(verification["entries"] as? Int == 2)

            // A gap is recorded against the host.
            _ = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(log: [TestServer.decision(5, after: second)]))
            let broken = try await s.get("/api/v1/hosts/\(host.id)/log", token: s.viewer)
            #expect((broken["verification"] as? [String: Any])?["intact"] as? Bool == false)
            #expect(try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)["log_problems"] as? Int == 1)
        }
    }

    @Test("the flow head: a batch that follows on moves it, one from past it (a restored server) does not, one below its own start moves nothing and is still stored")
    func flowHead() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let flows = { (after: Int, through: Int) -> String in
                TestServer.report(flows: [TestServer.flow()])
                    .replacingOccurrences(of: #""observed":"#, with: #""flows_after":\#(after),"flows_through":\#(through),"observed":"#)
            }
            // (9, 5): not a batch of anything; its rows are stored, no head is answered.
            for (after, through, head) in [(0, 7, 7), (7, 9, 9), (20, 30, 9), (9, 5, nil), (9, 12, 12)] as [(Int, Int, Int?)] {
                let answer = try await s.post("/agent/v1/report", token: host.credential, flows(after, through))
                #expect(answer.status == .ok && answer["flows_acked_through"] as? Int == head, "\(after)-\(through): \(answer.json)")
            }
            let plain = try await s.post("/agent/v1/report", token: host.credential, TestServer.report())
            #expect(plain["flows_acked_through"] is NSNull, "a report without the fields: no answer to go by")
        }
    }

    @Test func badReportsNameTheirField() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let mode = try await s.post("/agent/v1/report", token: host.credential,
                                        TestServer.report().replacingOccurrences(of: #""mode":"discovery""#, with: #""mode":"chaos""#))
            #expect(mode.status == .unprocessableContent)
            #expect(mode.field == "status.mode")
            let generation = try await s.post("/agent/v1/report", token: host.credential, TestServer.report(applied: -1))
            #expect(generation.status == .unprocessableContent)
            #expect(generation.field == "applied_generation")
            let flows = { (after: Int, through: Int) -> String in
                TestServer.report().replacingOccurrences(of: #""flows":[]"#, with: #""flows":[],"flows_after":\#(after),"flows_through":\#(through)"#)
            }
            #expect(flows(0, 0).contains("flows_after"), "the report's JSON as the test expects it")
            let negative = try await s.post("/agent/v1/report", token: host.credential, flows(-1, 3))
            #expect(negative.status == .unprocessableContent && negative.field == "flows_after")
            let notJSON = try await s.post("/agent/v1/report", token: host.credential, "{")
            #expect(notJSON.status == .badRequest)
            #expect(notJSON.error == "the body is not valid JSON")
            // None of them counted as a contact.
            #expect(try await s.get("/api/v1/hosts/\(host.id)", token: s.viewer)["last_seen"] is NSNull)
        }
    }

    @Test func aLocalChangeReportedTwiceIsOneIntent() async throws {
        try await withServer { s in
            let host = try await s.enroll()
            let report = TestServer.report(observed: "isolated", applied: 0, local: [
                "state": "isolated", "operator": "ops", "reason": "saw it first", "at": 1_800_000_000, "sequence": 3,
            ])
            let first = try await s.post("/agent/v1/report", token: host.credential, report)
            let again = try await s.post("/agent/v1/report", token: host.credential, report)
            #expect(first.status == .ok)
            #expect((first["state"] as? [String: Any])?["generation"] as? Int == 1)
            #expect((again["state"] as? [String: Any])?["generation"] as? Int == 1)
            let intents = try await s.get("/api/v1/intents?host_id=\(host.id)", token: s.viewer)
            #expect(intents.items.count == 1)
            #expect(intents.items.first?["origin"] as? String == "local")
            #expect(intents.items.first?["status"] as? String == "succeeded")
        }
    }
}
