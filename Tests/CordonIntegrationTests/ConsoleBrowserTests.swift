import CordonLab
import Foundation
import Testing

/// The web console in a real headless Chromium (Debian's, with its chromedriver) driven by
/// selenium, against a real server over TLS, a real PostgreSQL and a real agent in namespaces.
/// The browser runs in the server's namespace; the scenario is `Tests/Browser/console_test.py`.
/// `CORDON_SCREENSHOTS=DIR` also saves the main pages there (Docs/console is made that way).
@Suite(.serialized) struct ConsoleBrowserTests {
    typealias F = FleetScenario
    static let python = "/opt/cordon-test-peers/selenium/bin/python3"
    static let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var missing: String? {
        for (path, what) in [(python, "selenium (bash .ci/setup --tests)"), ("/usr/bin/chromium", "chromium"), ("/usr/bin/chromedriver", "chromium-driver")]
        where !FileManager.default.isExecutableFile(atPath: path) { return what }
        return nil
    }

    @Test("the console in a browser: sign-in, the fleet, a host's map with its red edge, isolation from the page, roles, CSRF, markup as text")
    func console() throws {
        guard FleetTests.shouldRun else { Issue.record(Integration.skipNote); return }
        if let missing = Self.missing {
            if Integration.required { Issue.record("the browser tests need \(missing)") }
            return
        }
        let setup = try FleetTests.Setup()
        defer { setup.lab.cleanup() }
        let f = setup.fleet
        let agentID = try setup.hostID(timeout: 15)
        let agentName = try setup.host(agentID)["hostname"] as? String ?? ""

        // A second host whose name is markup, enrolled by hand, reporting what the map should show:
        // its resolver and time server (standard networks), a refused probe (red), and a flow
        // whose DNS name is markup (the server refuses that row: names are DNS names).
        let markup = "<img src=x onerror=window.__cordonXSS=1>"
        let enrolled = try f.enroll(secretFile: try f.enrollSecret(tags: "role=probe"), hostname: markup)
        let probe = try setup.json(enrolled.body)
        let probeID = try #require(probe["host_id"] as? String, "\(enrolled)")
        let credential = try #require(probe["credential"] as? String)
        let now = ISO8601DateFormatter().string(from: Date())
        func flow(_ direction: String, _ proto: String, remote: String, port: Int?, local: Int? = nil, verdict: String = "allowed",
                  names: [String] = []) -> [String: Any] {
            ["direction": direction, "protocol": proto, "family": "ipv4", "local_address": "192.0.2.99", "local_port": local.map { $0 as Any } ?? NSNull(),
             "remote_address": remote, "remote_port": port.map { $0 as Any } ?? NSNull(), "icmp_type": NSNull(), "icmp_code": NSNull(),
             "connections": 3, "packets": 6, "bytes": 600, "first_seen": now, "last_seen": now, "verdict": verdict, "remote_names": names]
        }
        let report: [String: Any] = [
            "status": ["mode": "enforce", "isolated": false, "ruleset_version": NSNull(), "ruleset_digest": NSNull(), "lost_events": 0,
                       "guard_restores": 0, "guard_escalations": 0, "flows": 4, "agent_version": "0.3.0", "addresses": ["192.0.2.99"]],
            "observed": "released", "applied_generation": 0, "applied": NSNull(), "local": NSNull(), "log": [Any](),
            "flows": [flow("outbound", "udp", remote: F.serverA, port: 53), flow("outbound", "udp", remote: F.serverA, port: 123),
                      flow("inbound", "tcp", remote: "198.51.100.66", port: nil, local: 23, verdict: "rejected"),
                      flow("outbound", "tcp", remote: "203.0.113.77", port: 443, names: [markup])],
        ]
        let body = String(decoding: try JSONSerialization.data(withJSONObject: report), as: UTF8.self)
        let reported = try f.api("POST", "/agent/v1/report", token: credential, body: body)
        #expect(reported.status == 200, "\(reported)")
        let stored = try f.api("GET", "/api/v1/hosts/\(probeID)/flows", token: setup.viewer)
        #expect(stored.body.contains("198.51.100.66") && !stored.body.contains("onerror"), "the markup name's row is refused at upload: \(stored.body)")

        // Host a enforces a policy (approved, assigned and rolled out as an administrator would)
        // and its kernel refuses a connection the policy has no rule for: the red edge the page
        // must show on host a's map comes from a real agent, not from a report written here.
        let ruleset = setup.lab.directory + "/web.yaml"
        try FleetRolloutTests.ruleset(web: true).write(toFile: ruleset, atomically: false, encoding: .utf8)
        for arguments in [["approve", ruleset, "--name", "web"], ["assign", "web", "--selector", #"tier == "web""#],
                          ["rollout", "start", "--selector", #"tier == "web""#, "--waves", "100%", "--soak", "1s", "--confirm-window", "30s"]] {
            let done = try f.fleet(arguments, token: f.adminToken)
            #expect(done.succeeded, "\(arguments): \(done)")
        }
        try Integration.waitUntil("host a enforces the tier's policy", seconds: 60) { try setup.status(f.a)["mode"] as? String == "enforce" }
        let refused = try setup.lab.run(f.a, ["socat", "-u", "OPEN:/dev/null", "TCP4:\(F.web):8443,connect-timeout=1"], timeout: 5)
        #expect(!refused.succeeded, "host a's policy refuses tcp/8443 to the web service")
        try Integration.waitUntil("host a uploads the refused connection", seconds: 30) {
            let answer = try f.api("GET", "/api/v1/hosts/\(agentID)/flows", token: setup.viewer)
            let items = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]] ?? []
            return items.contains { $0["remote_port"] as? Int == 8443 && $0["verdict"] as? String == "rejected" }
        }

        // The server's key, by the hash Chromium pins it with.
        let spki = try setup.lab.run(nil, ["sh", "-c", "openssl x509 -in \"$0\" -pubkey -noout | openssl pkey -pubin -outform der "
                                               + "| openssl dgst -sha256 -binary | base64", f.data + "/server.pem"])
        #expect(spki.succeeded, "\(spki.stderr)")
        let profile = setup.lab.directory + "/chromium"
        try FileManager.default.createDirectory(atPath: profile, withIntermediateDirectories: true)
        var environment = [
            "SE_OFFLINE=true", "HOME=\(profile)", "CONSOLE_URL=https://\(F.serverA):\(F.port)", "CONSOLE_PROFILE=\(profile)", "CONSOLE_CA=\(f.caFile)",
            "CONSOLE_SPKI=\(spki.stdout.trimmingCharacters(in: .whitespacesAndNewlines))",
            "CONSOLE_RESPONDER_TOKEN=\(setup.responder)", "CONSOLE_VIEWER_TOKEN=\(setup.viewer)", "CONSOLE_ADMIN_TOKEN=\(f.adminToken)",
            "CONSOLE_AGENT_HOST=\(agentID)", "CONSOLE_AGENT_NAME=\(agentName)", "CONSOLE_PROBE_HOST=\(probeID)", "CONSOLE_PROBE_NAME=\(markup)",
        ]
        if let screenshots = ProcessInfo.processInfo.environment["CORDON_SCREENSHOTS"] {
            try FileManager.default.createDirectory(atPath: screenshots, withIntermediateDirectories: true)
            environment.append("CONSOLE_SCREENSHOTS=\(URL(fileURLWithPath: screenshots).path)")
        }
        #expect(try setup.webReachable(), "host a reaches the web service before it is isolated")
        let run = try setup.lab.run(f.server, ["env"] + environment + [Self.python, Self.source.appendingPathComponent("Tests/Browser/console_test.py").path],
                                    timeout: 240)
        #expect(run.succeeded, "the browser scenario:\n\(run.stdout)\(run.stderr.suffix(4000))")

        // The isolation the page asked for is in force on the host: checked with traffic.
        try Integration.waitUntil("host a reports itself isolated", seconds: 20) {
            (try setup.host(agentID)["isolation"] as? [String: Any])?["observed"] as? String == "isolated"
        }
        #expect(!(try setup.webReachable()), "isolated from the console, host a no longer reaches the web service")
        let audit = try f.api("GET", "/api/v1/audit", token: f.adminToken).body
        #expect(audit.contains("console sign-in") && audit.contains("console browser test"), "the sign-ins and the isolation are audited")
    }
}

/// The console scripts' own logic under `node --test` (Tests/Console): routes, roles, edge
/// styles, sorting, the map's geometry.
@Suite struct ConsoleScriptTests {
    @Test("node --test Tests/Console")
    func logic() throws {
        let node = ["/usr/bin/node", "/usr/bin/nodejs"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let node else {
            if Integration.required { Issue.record("node is missing: apt-get install nodejs (bash .ci/setup --tests)") }
            return
        }
        let directory = ConsoleBrowserTests.source.appendingPathComponent("Tests/Console").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: node)
        process.arguments = ["--test", directory]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text.suffix(6000))")
        #expect(text.contains("# fail 0") && !text.contains("# pass 0"), "\(text.suffix(2000))")
    }
}
