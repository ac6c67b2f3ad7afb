import CordonLab
import Foundation
import GRDB
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The agent as a service: the notify protocol and its watchdog, the Prometheus endpoint, the log
/// formats. A real agent in the discovery topology; the service manager's socket is the test's.
@Suite(.serialized) struct OperationsTests {
    typealias S = DiscoveryScenario

    static let ruleset = """
        name: operations-test
        networks:
          - name: ssh
            entries: [192.0.2.0/24]
            services: [tcp/22]
          - name: https
            entries: [192.0.2.20]
            services: [tcp/443]
        incoming:
          - from: ssh
        outgoing:
          - to: https
        """

    struct Setup {
        let lab: Lab
        let scenario: DiscoveryScenario
        let cordon: String

        init() throws {
            cordon = try Integration.cordon()
            lab = try Lab()
            do {
                scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
                try lab.setResolvers(scenario.host, [S.peerV4])
            } catch {
                lab.cleanup()
                throw error
            }
        }

        /// Once the first agent made the database.
        func approve() throws {
            let file = lab.directory + "/ruleset.yaml"
            try OperationsTests.ruleset.write(toFile: file, atomically: true, encoding: .utf8)
            let approved = try lab.run(scenario.host, [cordon, "approve", file, "--operator", "analyst", "--accept-risk", "--db", scenario.database])
            guard approved.succeeded else { throw LabError("approve: \(approved.stdout)\(approved.stderr)") }
        }

        func startAgent(_ extra: [String] = [], log: String? = nil) throws -> Child {
            try lab.startAgent(in: scenario.host, binary: cordon,
                               arguments: ["--db", scenario.database, "--socket", scenario.socket, "--flush-interval", "0.5"] + extra,
                               socket: scenario.socket, log: log ?? scenario.agentLog)
        }

        @discardableResult
        func cordon(_ arguments: [String]) throws -> CommandResult {
            let result = try lab.run(scenario.host, [cordon] + arguments + ["--db", scenario.database, "--socket", scenario.socket], timeout: 60)
            #expect(result.succeeded, "cordon \(arguments.joined(separator: " ")): \(result.stdout)\(result.stderr)")
            return result
        }

        func status() throws -> [String: Any] {
            let result = try cordon(["status", "--json"])
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        }

        /// `curl` inside the host namespace: the endpoint listens on the host's own loopback.
        func scrape(_ target: [String]) throws -> String {
            let result = try lab.run(scenario.host, ["curl", "-sS", "--fail", "--max-time", "5"] + target)
            guard result.succeeded else { throw LabError("scrape \(target): \(result.stderr)") }
            return result.stdout
        }
    }

    /// The sample of a metric line (`name{labels} value`), nil when absent.
    static func sample(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test("under a service manager: READY once the table is in, STATUS on every change of mode and isolation, WATCHDOG from the main loop (a flush stuck behind a locked database stops it), STOPPING at SIGTERM")
    func notifyProtocol() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let manager = try ServiceManagerSocket(directory: setup.lab.directory)
        // Spawned without waiting for its socket: the table is looked for the moment READY arrives.
        let agent = try setup.lab.spawn(setup.scenario.host, ["env", "NOTIFY_SOCKET=\(manager.path)", "WATCHDOG_USEC=1000000", setup.cordon,
                                                              "agent", "--db", setup.scenario.database, "--socket", setup.scenario.socket,
                                                              "--flush-interval", "0.5"], log: setup.scenario.agentLog)
        let ready = try #require(manager.receive(timeout: 15))
        #expect(try setup.lab.nftTables(setup.scenario.host).contains("table inet cordon"), "READY comes after the table is in")
        #expect(ready.contains("READY=1") && ready.contains("STATUS=discovery (nothing blocked)"), "\(ready)")
        #expect(ready.contains("MAINPID=\(agent.pid)"), "env execs the agent: its pid is the child's")
        #expect(try setup.lab.run(nil, [setup.cordon, "status", "--socket", setup.scenario.socket]).succeeded, "READY comes after the socket answers")
        try setup.approve()

        // Fed at half of WATCHDOG_USEC while the main loop runs.
        let idle = manager.collect(for: 2)
        #expect(idle.filter { $0.message == "WATCHDOG=1" }.count >= 3, "\(idle)")

        // The main loop stuck for 3 s in a flush (the database locked by another writer, a new flow
        // to write): no WATCHDOG for that long, so systemd would restart a hung agent; afterwards it
        // is fed again.
        let database = try DatabaseQueue(path: setup.scenario.database)
        let locked = DispatchSemaphore(value: 0)
        let lockThread = Thread {
            try? database.inTransaction(.exclusive) { _ in
                locked.signal()
                usleep(3_000_000)
                return .commit
            }
        }
        lockThread.start()
        #expect(locked.wait(timeout: .now() + 10) == .success)
        try setup.scenario.tcp(from: setup.scenario.peer, to: S.hostV4, port: 22)
        let stuck = manager.collect(for: 5).filter { $0.message == "WATCHDOG=1" }.map(\.at)
        let gaps = zip([0] + stuck, stuck).map { $1 - $0 }
        #expect((gaps.max() ?? 0) >= 2, "a gap of the lock's length: \(stuck)")
        #expect((stuck.last ?? 0) >= 3.5, "fed again after the lock: \(stuck)")

        // STATUS follows the mode and the isolation.
        func nextStatus(containing text: String) -> String? {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if let message = manager.receive(timeout: 1), message.hasPrefix("STATUS="), message.contains(text) { return message }
            }
            return nil
        }
        try setup.cordon(["enforce", "--operator", "ivy"])
        let unconfirmed = nextStatus(containing: "enforcing ruleset 1")
        #expect(unconfirmed?.contains("unconfirmed: rolls back at") == true, "\(unconfirmed ?? "no STATUS")")
        try setup.cordon(["confirm", "--operator", "ivy"])
        #expect(nextStatus(containing: "enforcing ruleset 1") == "STATUS=enforcing ruleset 1")
        try setup.cordon(["isolate", "--operator", "ivy", "--reason", "test"])
        #expect(nextStatus(containing: "ISOLATED") == "STATUS=ISOLATED; enforcing ruleset 1")

        agent.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        var stopping: String?
        while stopping == nil && Date() < deadline {
            if let message = manager.receive(timeout: 1), message.contains("STOPPING=1") { stopping = message }
        }
        #expect(stopping != nil, "STOPPING=1 before exiting")
        #expect(agent.wait(timeout: 10) == 0)
    }

    @Test("metrics: off by default; on a local address and on a unix socket they follow the status, in discovery and enforcing; JSON logs are one object per line")
    func metricsEndpointAndLogs() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        var agent = try setup.startAgent()
        try setup.approve()
        let listening = try setup.lab.run(setup.scenario.host, ["ss", "-Hltnx"]).stdout
        #expect(!listening.contains(":9464") && !listening.contains("metrics"), "nothing listens unless configured: \(listening)")
        setup.lab.stop(agent)

        agent = try setup.startAgent(["--metrics", "127.0.0.1:9464"])
        try setup.scenario.tcp(from: setup.scenario.peer, to: S.hostV4, port: 22)
        // Once the connection's events are counted and a flush has run.
        var text = ""
        try Integration.waitUntil("the scrape shows events and a flush") {
            text = try setup.scrape(["http://127.0.0.1:9464/metrics"])
            return (Self.sample(text, "cordon_conntrack_events_total") ?? 0) > 0 && (Self.sample(text, "cordon_flush_duration_seconds_count") ?? 0) >= 1
        }
        let status = try setup.status()
        #expect(text.contains("# TYPE cordon_conntrack_events_total counter"))
        #expect(text.contains("# HELP cordon_rejected_packets_total "))
        let events = try #require(Self.sample(text, "cordon_conntrack_events_total"))
        #expect(events > 0 && events <= Double(status["events"] as? Int ?? -1), "scraped \(events), then status \(status["events"] ?? "")")
        #expect(Self.sample(text, "cordon_enforcing") == 0)
        #expect(Self.sample(text, "cordon_flush_duration_seconds_count").map { $0 >= 1 } == true, "flushes are timed")
        #expect(Self.sample(text, "cordon_flow_aggregates") == Double(status["flows"] as? Int ?? -1))

        try setup.cordon(["enforce", "--operator", "ivy"])
        // Refused by the ruleset: only tcp/443 goes out.
        _ = try setup.lab.run(setup.scenario.host, ["socat", "-T1", "-u", "/dev/null", "TCP:\(S.peerV4):8080,connect-timeout=1"], timeout: 5)
        try Integration.waitUntil("the scrape counts the refused packet") {
            text = try setup.scrape(["http://127.0.0.1:9464/metrics"])
            return (Self.sample(text, "cordon_rejected_packets_total{direction=\"outbound\"}") ?? 0) >= 1
        }
        #expect(Self.sample(text, "cordon_enforcing") == 1)
        #expect(Self.sample(text, "cordon_ruleset_version") == 1)
        #expect((Self.sample(text, "cordon_confirm_deadline_timestamp_seconds") ?? 0) > Date().timeIntervalSince1970)
        #expect((Self.sample(text, "cordon_applies_total{outcome=\"ok\"}") ?? 0) >= 1)
        #expect((Self.sample(text, "cordon_apply_duration_seconds_count") ?? 0) >= 1)
        #expect((Self.sample(text, "cordon_rejected_packets_total{direction=\"outbound\"}") ?? 0) >= 1, "\(text)")
        try setup.cordon(["confirm", "--operator", "ivy"])
        setup.lab.stop(agent)

        // A unix socket (root only), and JSON log lines.
        let socket = setup.lab.directory + "/metrics.sock"
        let log = setup.lab.directory + "/agent-json.log"
        agent = try setup.startAgent(["--metrics", "unix:\(socket)", "--log-format", "json"], log: log)
        // The control socket answers first; the endpoint follows (on a loaded machine, later).
        try Integration.waitUntil("the metrics socket answers") {
            guard let scraped = try? setup.scrape(["--unix-socket", socket, "http://localhost/metrics"]) else { return false }
            text = scraped
            return true
        }
        #expect(Self.sample(text, "cordon_enforcing") == 1)
        #expect(Self.sample(text, "cordon_confirm_deadline_timestamp_seconds") == 0, "confirmed: no deadline")
        var info = stat()
        #expect(stat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(setup.lab.stop(agent) == 0)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.count >= 3)
        var levels: Set<String> = []
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
            #expect(object?["message"] != nil && object?["time"] != nil, "not a log object: \(line)")
            if let level = object?["level"] { levels.insert(level) }
        }
        #expect(levels.isSuperset(of: ["info", "notice"]), "\(levels)")
        #expect(lines.contains { $0.contains("\"mode\":\"enforce\"") && $0.contains("\"action\":") }, "transitions carry metadata")
    }
}
