import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The server on a hostile day: its database paused or stopped, and a peer holding idle or slow
/// connections. Through all of it the server answers, and an isolation from elsewhere gets through.
@Suite(.serialized) struct FleetOutageTests {
    typealias F = FleetScenario
    typealias Setup = FleetTests.Setup

    /// The status, the `Retry-After` header and the seconds taken by one API call.
    static func call(_ setup: Setup, _ method: String, _ path: String, token: String?, body: String? = nil)
        throws -> (status: Int, retryAfter: String?, seconds: Double) {
        var arguments = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "--max-time", "60", "--cacert", setup.fleet.caFile, "-X", method]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let started = Date()
        let result = try setup.lab.run(setup.fleet.server, arguments + ["https://\(F.serverA):\(F.port)\(path)"], timeout: 70)
        let seconds = Date().timeIntervalSince(started)
        // Headers end in CRLF, which Swift reads as one Character: split on the scalar.
        let lines = result.stdout.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)).trimmingCharacters(in: .whitespacesAndNewlines) }
        let retry = lines.first { $0.lowercased().hasPrefix("retry-after:") }.map { String($0.dropFirst("retry-after:".count)).trimmingCharacters(in: .whitespaces) }
        return (Int(lines.last ?? "") ?? 0, retry, seconds)
    }

    /// Waits until `/readyz` answers 200.
    static func ready(_ setup: Setup, within seconds: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try call(setup, "GET", "/readyz", token: nil).status == 200 { return true }
            usleep(200_000)
        }
        return false
    }

    /// Everything that touches the database answers 503 with Retry-After within the deadline;
    /// liveness stays 200 and readiness fails.
    static func expectOutage(_ setup: Setup, _ id: String, deadline: Double, _ what: String) throws {
        let isolate = #"{"state":"isolated","reason":"during the outage"}"#
        for (method, path, body, token) in [("GET", "/api/v1/hosts", nil, setup.viewer), ("GET", "/api/v1/hosts/\(id)", nil, setup.viewer),
                                            ("POST", "/api/v1/hosts/\(id)/isolation", isolate, setup.responder),
                                            ("GET", "/api/v1/intents", nil, setup.viewer)] as [(String, String, String?, String)] {
            let answer = try call(setup, method, path, token: token, body: body)
            #expect(answer.status == 503, "\(what): \(method) \(path) answered \(answer.status)")
            #expect(answer.retryAfter != nil, "\(what): \(method) \(path) without Retry-After")
            // Bounded: a hang lasts until the client gives up (60 s here), the deadline a few seconds.
            #expect(answer.seconds < deadline + 5, "\(what): \(method) \(path) took \(answer.seconds) s")
        }
        let readiness = try call(setup, "GET", "/readyz", token: nil)
        #expect(readiness.status == 503 && readiness.retryAfter != nil, "\(what): /readyz answered \(readiness.status)")
        #expect(try call(setup, "GET", "/healthz", token: nil).status == 200, "\(what): liveness depends on the database")
    }

    /// After the outage: ready again by itself, and an isolation reaches the agent and is released.
    static func expectRecovery(_ setup: Setup, _ id: String, _ what: String) throws {
        #expect(try Self.ready(setup, within: 60), "\(what): /readyz never came back")
        let isolate = try setup.request(id, "isolated", reason: "after the outage")
        let isolated = try setup.settle(try #require(isolate["intent_id"] as? String), timeout: 30)
        #expect(isolated["status"] as? String == "succeeded", "\(what): \(isolated)")
        let release = try setup.request(id, "released", reason: "after the outage")
        let released = try setup.settle(try #require(release["intent_id"] as? String), timeout: 40)
        #expect(released["status"] as? String == "succeeded", "\(what): \(released)")
    }

    @Test("a paused database (SIGSTOP): 503 with Retry-After within the deadline, /readyz fails and /healthz answers; it recovers by itself")
    func pausedDatabase() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(serverExtra: ["--database-timeout", "2"])
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 15)
        #expect(try Self.ready(setup, within: 15))
        setup.fleet.postgres.pause()
        do {
            try Self.expectOutage(setup, id, deadline: 2, "paused")
        } catch {
            setup.fleet.postgres.resume()
            throw error
        }
        setup.fleet.postgres.resume()
        try Self.expectRecovery(setup, id, "paused")
    }

    @Test("a stopped database: 503 with Retry-After from the first request on, and recovery when it starts again")
    func stoppedDatabase() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(serverExtra: ["--database-timeout", "2"])
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 15)
        #expect(try Self.ready(setup, within: 15))
        setup.fleet.postgres.stop()
        try Self.expectOutage(setup, id, deadline: 2, "stopped")
        try setup.fleet.postgres.start()
        try Self.expectRecovery(setup, id, "stopped")
    }


    @Test("a flood of idle and slow connections from one address, with the server at 1,024 descriptors, does not stop an isolation from elsewhere; the server closes them")
    func connectionFlood() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        // The limit a systemd service gets without LimitNOFILE.
        let setup = try Setup(serverPrefix: ["prlimit", "--nofile=1024:1024", "--"])
        defer { setup.lab.cleanup() }
        let id = try setup.hostID(timeout: 15)
        let report = setup.lab.directory + "/flood.json"
        let seconds = 25.0, hold = 45.0
        let flood = try setup.fleet.startFlood(idle: 1100, slow: 100, seconds: seconds, hold: hold, report: report)
        // The flood is in force once the server holds as many of its connections as one address may.
        let started = Date()
        func floodHeld() throws -> Int {
            try setup.lab.run(setup.fleet.server, ["ss", "-Htn", "state", "established", "( sport = :\(F.port) )"]).stdout
                .split(separator: "\n").filter { $0.contains(F.hostB + ":") }.count
        }
        var held = 0
        while held < 64 && Date().timeIntervalSince(started) < 30 && flood.isRunning {
            held = try floodHeld()
            usleep(100_000)
        }
        // (Established connections include those in the kernel's accept queue: the descriptors below are what the server holds.)
        #expect(held >= 64, "the flood never filled its share: \(held)")

        let isolate = try setup.request(id, "isolated", reason: "during the flood")
        let isolated = try setup.settle(try #require(isolate["intent_id"] as? String), timeout: 20)
        #expect(isolated["status"] as? String == "succeeded", "\(isolated)")
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(setup.server.pid)/fd").count) ?? -1
        // 64 for the flood's address, a few for the agent, the analyst and the pool: far from 1,024.
        #expect(descriptors > 0 && descriptors < 300, "the server holds \(descriptors) descriptors under the flood")
        let release = try setup.request(id, "released", reason: "during the flood")
        #expect(try setup.settle(try #require(release["intent_id"] as? String), timeout: 40)["status"] as? String == "succeeded")

        // The flood stops opening and holds what it has: the server closes it all, idle connections
        // at the handshake deadline (10 s) and slow heads at the idle timeout (30 s). Read on the
        // server's side: a connection the kernel never handed over looks open to the client forever.
        while Date().timeIntervalSince(started) < seconds { usleep(200_000) }
        var left = try floodHeld()
        while left > 0 && Date().timeIntervalSince(started) < seconds + hold - 2 {
            usleep(500_000)
            left = try floodHeld()
        }
        #expect(left == 0, "\(left) connections of the flood were never closed")
        #expect(flood.wait(timeout: hold + 30) == 0, "the flood script failed: \((try? String(contentsOfFile: report + ".log", encoding: .utf8)) ?? "")")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        #expect((result["closed_by_server"] as? Int ?? 0) > 1000, "\(result)")
    }

    @Test("hostile input: every enrollment field bounded and addresses parsed, bad flow rows refused by themselves, escapes shown as text in the CLI, `bearer` in any case, HTTP/1.0 closed after its answer")
    func hostileInput() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        let secret = try String(contentsOfFile: try f.enrollSecret(), encoding: .utf8)
        func enroll(hostname: String = "h", machineID: String = "m", addresses: [String] = [], version: String = "0.3.0",
                    tags: [String: String] = [:]) throws -> (status: Int, body: String) {
            let body: [String: Any] = ["secret": secret, "hostname": hostname, "machine_id": machineID, "addresses": addresses,
                                       "agent_version": version, "tags": tags]
            return try f.api("POST", "/agent/v1/enroll", token: nil, body: String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self))
        }
        for (answer, status, field) in [(try enroll(addresses: (0..<700).map { "192.0.2.\($0 % 250)" }), 422, "addresses"),
                                        (try enroll(addresses: ["not an address"]), 422, "addresses[0]"),
                                        (try enroll(machineID: String(repeating: "m", count: 900)), 422, "machine_id"),
                                        (try enroll(tags: ["role": String(repeating: "x", count: 100_000)]), 422, "tags.role"),
                                        (try enroll(tags: Dictionary(uniqueKeysWithValues: (0..<40).map { ("k\($0)", "v") })), 422, "tags")] {
            #expect(answer.status == status && (try? setup.json(answer.body))?["field"] as? String == field, "\(field): \(answer.status) \(answer.body.prefix(300))")
        }
        #expect(try enroll(version: String(repeating: "v", count: 2_000_000)).status == 413, "a 2 MB body is refused before it is parsed")

        // A name that draws a fake row on a terminal is accepted as data and shown as text.
        let evil = "zz\u{1B}[2K\rdb-01 ISOLATED\nfake"
        let enrolled = try enroll(hostname: evil, addresses: ["192.0.2.10"])
        #expect(enrolled.status == 201, "\(enrolled)")
        let credential = try #require(try setup.json(enrolled.body)["credential"] as? String)
        let id = try #require(try setup.json(enrolled.body)["host_id"] as? String)
        for command in [["hosts"], ["show", id]] {
            let shown = try f.fleet(command, token: setup.viewer)
            #expect(shown.succeeded, "\(shown.stderr)")
            #expect(!shown.stdout.unicodeScalars.contains("\u{1B}") && !shown.stdout.unicodeScalars.contains("\r"), "raw escapes reach the terminal: \(command)")
            #expect(shown.stdout.contains("zz\\e[2K\\rdb-01 ISOLATED\\nfake"), "\(command): \(shown.stdout)")
        }

        // Three rows, the middle one bad: it alone is refused, by index and field.
        func row(_ remote: String) -> [String: Any] {
            ["direction": "outbound", "protocol": "tcp", "family": "ipv4", "local_address": "192.0.2.10", "remote_address": remote, "remote_port": 443,
             "connections": 1, "packets": 1, "bytes": 1, "first_seen": "2026-11-22T21:05:48Z", "last_seen": "2026-11-22T21:05:49Z", "verdict": "allowed"]
        }
        let report: [String: Any] = [
            "status": ["mode": "discovery", "isolated": false, "lost_events": 0, "guard_restores": 0, "guard_escalations": 0, "flows": 3,
                       "agent_version": "0.3.0", "addresses": ["192.0.2.10"]] as [String: Any],
            "observed": "released", "applied_generation": 0, "log": [] as [Any],
            "flows": [row("198.51.100.1"), row("<img src=x onerror=alert(1)>"), row("198.51.100.0/24")]]
        let answer = try f.api("POST", "/agent/v1/report", token: credential,
                               body: String(decoding: try JSONSerialization.data(withJSONObject: report), as: UTF8.self))
        #expect(answer.status == 200, "\(answer)")
        let refused = try #require(try setup.json(answer.body)["refused_flows"] as? [[String: Any]], "\(answer.body)")
        #expect(refused.count == 1 && refused.first?["index"] as? Int == 1 && refused.first?["field"] as? String == "remote_address", "\(refused)")
        let stored = try f.api("GET", "/api/v1/hosts/\(id)/flows", token: setup.viewer)
        let flows = try JSONSerialization.jsonObject(with: Data(stored.body.utf8)) as? [[String: Any]] ?? ((try? setup.json(stored.body))?["items"] as? [[String: Any]] ?? [])
        #expect(Set(flows.compactMap { $0["remote_address"] as? String }) == ["198.51.100.1", "198.51.100.0/24"], "\(stored.body.prefix(400))")

        // The scheme is case-insensitive (RFC 9110).
        let lower = try setup.lab.run(f.server, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", f.caFile, "-H", "Authorization: bearer \(setup.viewer)",
                                                 "https://\(F.serverA):\(F.port)/api/v1/hosts"])
        #expect(lower.stdout == "200", "\(lower)")

        // HTTP/1.0 without keep-alive: the server closes after its answer (s_client ends when it
        // does; `timeout` ends it with 124 when the connection is kept open).
        let http10 = try setup.lab.run(f.server, ["sh", "-c", "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | timeout 10 openssl s_client -quiet -CAfile \(f.caFile) -connect \(F.serverA):\(F.port) 2>/dev/null"],
                                       timeout: 20)
        #expect(http10.status != 124 && http10.stdout.contains("200 OK"), "an HTTP/1.0 connection was kept open: \(http10)")
    }

    @Test("SIGTERM with an agent's long poll parked: the poll is answered and the server exits well inside the unit's 30 s stop timeout")
    func shutdownEndsPolls() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        _ = try setup.hostID(timeout: 15)
        // The poll is parked once the agent is connected and has reported (hostID waits for both).
        let started = Date()
        let status = setup.lab.stop(setup.server, signal: SIGTERM, timeout: 25)
        let seconds = Date().timeIntervalSince(started)
        #expect(status == 0, "the server did not exit cleanly within 25 s (status \(String(describing: status)))")
        // A poll lasts up to 25 s: a server waiting for it would take that long.
        #expect(seconds < 15, "stopping took \(seconds) s")
    }

    @Test("impostors: a second host with another's name and machine id is flagged on both, a name they share is refused with both ids; each tag says where it came from, and a secret can refuse the host's own")
    func impostorsAndTagSources() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(agentA: false)
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        func enroll(_ secretFile: String, hostname: String, machineID: String, tags: [String: String]) throws -> String {
            let secret = try String(contentsOfFile: secretFile, encoding: .utf8)
            let body: [String: Any] = ["secret": secret, "hostname": hostname, "machine_id": machineID, "addresses": ["192.0.2.10"],
                                       "agent_version": "0.3.0", "tags": tags]
            let answer = try f.api("POST", "/agent/v1/enroll", token: nil, body: String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self))
            guard answer.status == 201, let id = try setup.json(answer.body)["host_id"] as? String else { throw LabError("enroll: \(answer)") }
            return id
        }
        let web = try f.enrollSecret(tags: "tier=web")
        let real = try enroll(web, hostname: "db-01", machineID: "m-1", tags: ["role": "domain-controller", "tier": "claimed"])
        let host = try setup.host(real)
        #expect(host["tags"] as? [String: String] == ["tier": "web", "role": "domain-controller"], "the secret's tag wins")
        #expect(host["tag_sources"] as? [String: String] == ["tier": "secret", "role": "host"])
        #expect(host["duplicate_machine_id"] as? Bool == false)

        let strict = try f.enrollSecret(tags: "tier=db", hostTags: false)
        let other = try enroll(strict, hostname: "db-02", machineID: "m-2", tags: ["role": "domain-controller"])
        #expect(try setup.host(other)["tags"] as? [String: String] == ["tier": "db"], "a secret with --no-host-tags ignores the host's claims")
        #expect(try setup.host(other)["tag_sources"] as? [String: String] == ["tier": "secret"])

        let impostor = try enroll(web, hostname: "db-01", machineID: "m-1", tags: [:])
        #expect(try setup.host(real)["duplicate_machine_id"] as? Bool == true)
        #expect(try setup.host(impostor)["duplicate_machine_id"] as? Bool == true)
        #expect(try setup.host(other)["duplicate_machine_id"] as? Bool == false)
        let byName = try f.fleet(["isolate", "db-01", "--reason", "x"], token: setup.responder)
        #expect(byName.status == 1 && byName.stderr.contains("impostor") && byName.stderr.contains(real) && byName.stderr.contains(impostor), "\(byName.stderr)")
        let shown = try f.fleet(["show", real], token: setup.viewer)
        #expect(shown.stdout.contains("ANOTHER HOST HAS THIS MACHINE ID") && shown.stdout.contains("role=domain-controller (host)"), "\(shown.stdout)")
        // Revoking the impostor clears the flag on the real host.
        #expect(try setup.lab.run(f.server, [f.serverBinary, "host", "revoke", impostor, "--data", f.data, "--database", f.postgres.url]).succeeded)
        #expect(try setup.host(real)["duplicate_machine_id"] as? Bool == false)
    }
}
