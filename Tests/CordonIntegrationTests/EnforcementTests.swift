import CordonAgent
import CordonCore
import CordonLab
import CordonStore
import Foundation
import GRDB
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Enforcement through the real agent in the discovery topology: peer 192.0.2.20 serves tcp/443,
/// udp/53 and tcp/8080 (socat), the host serves tcp/22 and udp/514. The ruleset allows SSH in,
/// HTTPS and ping out; a collector listens on the peer.
@Suite(.serialized) struct EnforcementTests {
    typealias S = DiscoveryScenario
    static let collectorPort = 9000

    static let ruleset = """
        name: enforcement-test
        networks:
          - name: ssh
            entries: [192.0.2.0/24]
            services: [tcp/22]
          - name: https
            entries: [192.0.2.20, "2001:db8::20"]
            services: [tcp/443]
          - name: ping
            entries: [0.0.0.0/0, "::/0"]
            services: [icmp/8, icmp/0, icmpv6/128, icmpv6/129]
        incoming:
          - from: ssh
          - from: ping
        outgoing:
          - to: https
          - to: ping
        """

    /// A scenario with the agent running, a collector on the peer, and `ruleset` approved.
    struct Setup {
        let lab: Lab
        let scenario: DiscoveryScenario
        let cordon: String
        var agent: Child
        /// The collector's listener on the peer (an echo server), nil when the setup has none.
        var collectorListener: Child?

        init(collector: String = "\(S.peerV4):\(EnforcementTests.collectorPort)", listen: Bool = true) throws {
            cordon = try Integration.cordon()
            lab = try Lab()
            scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
            if listen {
                collectorListener = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:\(EnforcementTests.collectorPort),fork,reuseaddr", "PIPE"])
                var listening = false
                for _ in 0..<200 where !listening {
                    listening = try lab.run(scenario.peer, ["ss", "-Hltn", "sport = :\(EnforcementTests.collectorPort)"]).stdout.contains(":")
                    if !listening { usleep(50_000) }
                }
            }
            try lab.setResolvers(scenario.host, [S.peerV4])
            agent = try scenario.startAgent(binary: cordon, extra: ["--collector", collector])
            try approve(EnforcementTests.ruleset)
        }

        func approve(_ text: String) throws {
            let file = lab.directory + "/ruleset-\(UInt32.random(in: 0...UInt32.max)).yaml"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let result = try lab.run(scenario.host, [cordon, "approve", file, "--operator", "analyst", "--accept-risk", "--db", scenario.database])
            guard result.succeeded else { throw LabError("approve: \(result.stdout)\(result.stderr)") }
        }

        /// Runs a cordon subcommand against this agent (its database and socket).
        @discardableResult
        func cordon(_ arguments: [String], timeout: Double = 60) throws -> CommandResult {
            try lab.run(scenario.host, [cordon] + arguments + ["--db", scenario.database, "--socket", scenario.socket], timeout: timeout)
        }

        func status() throws -> [String: Any] {
            let result = try cordon(["status", "--json"])
            guard result.succeeded, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
                throw LabError("status: \(result.stderr)")
            }
            return object
        }

        func decisions() throws -> [Decision] { try FlowStore(readingFrom: scenario.database).decisions() }

        /// Enforces the approved ruleset and confirms it, as most tests start.
        func enforceAndConfirm() throws {
            let enforce = try cordon(["enforce", "--operator", "ivy"])
            #expect(enforce.succeeded, "\(enforce.stdout)\(enforce.stderr)")
            let confirm = try cordon(["confirm", "--operator", "ivy"])
            #expect(confirm.succeeded, "\(confirm.stdout)\(confirm.stderr)")
        }

        /// Outbound TCP from the host: nil when it connected, else the error and how long it took.
        func connect(from namespace: String, to address: String, port: Int, timeout: Int = 3) throws -> (error: String, seconds: Double)? {
            let started = Date()
            let result = try lab.run(namespace, ["socat", "-T1", "-u", "/dev/null", "TCP:\(address):\(port),connect-timeout=\(timeout)"],
                                     timeout: Double(timeout) + 5)
            return result.succeeded ? nil : (result.stderr, Date().timeIntervalSince(started))
        }

        func tableText() throws -> String { try lab.run(scenario.host, ["nft", "list", "table", "inet", "cordon"]).stdout }

        /// An echo server on the host, listening before this returns.
        func hostEcho(port: Int) throws {
            _ = try lab.spawn(scenario.host, ["socat", "TCP-LISTEN:\(port),fork,reuseaddr", "PIPE"])
            try waitUntil("the host listens on \(port)") { try lab.run(scenario.host, ["ss", "-Hltn", "sport = :\(port)"]).stdout.contains(":\(port)") }
        }

        /// A session that connects now and writes `word` only after `delay` seconds; `log` shows
        /// the echo if the session lived that long. Returns once it is established.
        func lateWrite(from namespace: String, to address: String, port: Int, word: String, delay: Int, log: String) throws -> Child {
            let child = try lab.spawn(namespace, ["sh", "-c", "(sleep \(delay); echo \(word)) | socat -T\(delay + 2) - TCP:\(address):\(port)"], log: log)
            try waitUntil("the session to \(address):\(port) is established") {
                try lab.run(namespace, ["ss", "-Htn", "state", "established", "dport = :\(port)"]).stdout.contains(":\(port)")
            }
            return child
        }

        /// Counts, in `namespace`, the TCP packets from `source` to `port` that reach it; the
        /// returned function reads the count. A table of the test's own in the peer's namespace.
        func countArrivals(in namespace: String, from source: String, port: Int) throws -> () throws -> Int {
            let table = "table inet lab_arrivals {\n  chain input { type filter hook input priority 0; ip saddr \(source) tcp dport \(port) counter; }\n}"
            let added = try lab.run(namespace, ["nft", "-f", "-"], input: table + "\n")
            guard added.succeeded else { throw LabError("nft: \(added.stderr)") }
            return {
                let listing = try lab.run(namespace, ["nft", "list", "chain", "inet", "lab_arrivals", "input"]).stdout
                guard let range = listing.range(of: #"counter packets (\d+)"#, options: .regularExpression),
                      let count = Int(listing[range].split(separator: " ").last ?? "") else { throw LabError("no counter in \(listing)") }
                return count
            }
        }

        /// Polls up to 10 s; on a loaded machine a freshly started server may take a while.
        func waitUntil(_ what: String, _ condition: () throws -> Bool) throws {
            for _ in 0..<200 {
                if try condition() { return }
                usleep(50_000)
            }
            throw LabError("timed out waiting until \(what)")
        }
    }

    @Test("enforce: approved traffic flows, an unapproved port out is refused at once, one in gets silence, both are red flows; confirm keeps it; discover opens it")
    func enforceConfirmDiscover() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, scenario) = (setup.lab, setup.scenario)
        try setup.hostEcho(port: 5555)
        // An established session from before the switch, on a port the ruleset does not allow
        // (tcp/5555): it must survive, being established.
        // The client writes only after the switch; the host's echo comes back through it.
        let session = try setup.lateWrite(from: scenario.peer, to: S.hostV4, port: 5555, word: "still-here", delay: 3,
                                          log: lab.directory + "/session.log")

        let enforce = try setup.cordon(["enforce", "--operator", "alice", "--confirm-within", "60"])
        #expect(enforce.succeeded, "\(enforce.stdout)\(enforce.stderr)")
        var status = try setup.status()
        #expect(status["mode"] as? String == "enforce")
        #expect(status["confirm_deadline"] is String)
        #expect((status["ruleset"] as? [String: Any])?["version"] as? Int == 1)
        #expect(status["backend"] as? String == "nftables")

        // Approved: SSH port in, HTTPS out (v4 and v6), ping both ways, the collector.
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        try scenario.tcp(from: scenario.host, to: S.peerV4, port: 443)
        try scenario.tcp(from: scenario.host, to: "[\(S.peerV6)]", port: 443)
        try scenario.ping(from: scenario.host, to: S.peerV4)
        try scenario.ping(from: scenario.peer, to: S.hostV4)
        try scenario.ping(from: scenario.peer, to: S.hostV6)
        #expect(try setup.connect(from: scenario.host, to: S.peerV4, port: Self.collectorPort) == nil)
        // Not approved, outbound: refused at once (a TCP reset: "Connection refused", where a
        // drop would leave the 3 s connect to time out).
        let refused = try #require(try setup.connect(from: scenario.host, to: S.peerV4, port: 8080))
        #expect(refused.error.contains("Connection refused"), "\(refused.error)")
        // Not approved, inbound: silence until the client gives up (no reset, the whole 2 s).
        let silent = try #require(try setup.connect(from: scenario.peer, to: S.hostV4, port: 5555, timeout: 2))
        #expect(!silent.error.contains("Connection refused"), "\(silent.error)")
        #expect(silent.seconds >= 1.9)
        // The session from before enforcement is alive.
        #expect(session.wait(timeout: 10) == 0)
        #expect(try String(contentsOfFile: lab.directory + "/session.log", encoding: .utf8).contains("still-here"))

        // Red flows: both refusals recorded with verdict "rejected" (once the agent has flushed them).
        var red: [JSONFlow] = []
        try Integration.waitUntil("both refusals are recorded") {
            red = try lab.flows(setup.cordon, database: scenario.database, filters: ["--verdict", "rejected"])
            return red.contains { $0.direction == "outbound" && $0.remotePort == 8080 } && red.contains { $0.direction == "inbound" && $0.localPort == 5555 }
        }
        #expect(red.contains { $0.direction == "outbound" && $0.remotePort == 8080 && $0.remote == S.peerV4 && $0["verdict"] as? String == "rejected" })
        #expect(red.contains { $0.direction == "inbound" && $0.localPort == 5555 && $0.remote == S.peerV4 })
        #expect(!red.contains { $0.remotePort == 443 || $0.localPort == 22 }, "approved traffic is not red")
        status = try setup.status()
        #expect((status["rejected_outbound"] as? Int ?? 0) >= 1)
        #expect((status["rejected_inbound"] as? Int ?? 0) >= 1)

        let confirm = try setup.cordon(["confirm", "--operator", "alice"])
        #expect(confirm.succeeded, "\(confirm.stderr)")
        status = try setup.status()
        #expect(status["confirm_deadline"] is NSNull)
        #expect(status["mode"] as? String == "enforce")
        #expect(try setup.cordon(["confirm", "--operator", "alice"]).status == 1, "nothing left to confirm")

        let discover = try setup.cordon(["discover", "--operator", "alice"])
        #expect(discover.succeeded, "\(discover.stderr)")
        #expect(try setup.connect(from: scenario.host, to: S.peerV4, port: 8080) == nil)
        #expect(try setup.status()["mode"] as? String == "discovery")
        #expect(try setup.tableText().contains("policy accept"))

        let actions = try setup.decisions().map { "\($0.action) \($0.operator) \($0.outcome.split(separator: ":").first ?? "")" }
        #expect(actions.suffix(3) == ["enforce alice success", "confirm alice success", "discover alice success"])
        let enforced = try #require(try setup.decisions().first { $0.action == "enforce" })
        #expect(enforced.backend == "nftables")
        #expect(enforced.managementWhitelist.contains(.init(protocol: "tcp", address: S.peerV4, port: UInt16(Self.collectorPort))))
        #expect(enforced.managementWhitelist.contains(.init(protocol: "udp", address: S.peerV4, port: 53)), "the resolver")
        #expect(enforced.policy.contains("name: enforcement-test"))
    }

    @Test("an enforcement nobody confirms rolls back by itself, and the log says so")
    func unconfirmedRollsBack() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let enforce = try setup.cordon(["enforce", "--operator", "bob", "--confirm-within", "2"])
        #expect(enforce.succeeded, "\(enforce.stderr)")
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080) != nil)
        var mode = ""
        for _ in 0..<60 where mode != "discovery" {
            usleep(100_000)
            mode = try setup.status()["mode"] as? String ?? ""
        }
        #expect(mode == "discovery")
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080) == nil)
        let last = try #require(try setup.decisions().last)
        #expect(last.action == "rollback" && last.operator == "cordon-agent")
        #expect(last.reason == "not confirmed within 2 s")
        #expect(last.outcome == "success: back to discovery")
    }

    @Test("an agent killed before confirmation cannot keep the host closed: the kernel opens it by itself after the deadline")
    func killedBeforeConfirmationOpensInTheKernel() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let enforcedAt = Date()
        let enforce = try setup.cordon(["enforce", "--operator", "erin", "--confirm-within", "1"])
        #expect(enforce.succeeded, "\(enforce.stderr)")
        setup.agent.signal(SIGKILL)
        _ = setup.agent.wait(timeout: 10)
        let killedAt = Date()
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080) != nil, "still enforcing right after the kill")
        // Deadline (1 s, rounded up) plus the kernel's grace, then the armed elements expire.
        var open = false
        while !open && Date().timeIntervalSince(killedAt) < 15 {
            usleep(250_000)
            open = try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080, timeout: 1) == nil
        }
        #expect(open, "the kernel's confirmation switch did not open the host")
        #expect(Date().timeIntervalSince(enforcedAt) >= Double(1 + TransitionRunner.kernelGrace) - 0.5, "not before the deadline and grace")
        #expect(try setup.tableText().contains("policy drop"), "the rules are still there; only the switch expired")
    }

    @Test("trying a new version: no confirmation rolls back to the confirmed one; a dead agent's kernel switch falls back to it too")
    func rollbackReturnsToTheConfirmedVersion() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let host = setup.scenario.host
        #expect(try setup.cordon(["enforce", "--operator", "fay"]).succeeded)
        #expect(try setup.cordon(["confirm", "--operator", "fay"]).succeeded)
        try setup.approve(Self.ruleset.replacingOccurrences(of: "services: [tcp/443]", with: "services: [tcp/443, tcp/8080]"))

        // The agent rolls back at the deadline, to version 1.
        #expect(try setup.cordon(["enforce", "--operator", "fay", "--confirm-within", "2"]).succeeded)
        #expect(try setup.connect(from: host, to: S.peerV4, port: 8080) == nil, "version 2 allows 8080")
        var version = 2
        for _ in 0..<60 where version != 1 {
            usleep(100_000)
            version = (try setup.status()["ruleset"] as? [String: Any])?["version"] as? Int ?? 0
        }
        #expect(version == 1)
        #expect(try setup.status()["mode"] as? String == "enforce")
        #expect(try setup.connect(from: host, to: S.peerV4, port: 8080) != nil, "version 1 refuses 8080 again")
        #expect(try setup.decisions().last?.outcome == "success: back to ruleset version 1")

        // The agent dies inside the window: the kernel falls back to version 1, not to open.
        #expect(try setup.cordon(["enforce", "--operator", "fay", "--confirm-within", "1"]).succeeded)
        setup.agent.signal(SIGKILL)
        _ = setup.agent.wait(timeout: 10)
        #expect(try setup.connect(from: host, to: S.peerV4, port: 8080) == nil, "version 2 in force")
        // Until the switch expires version 2 connects to 8080; after it, version 1 refuses it (an
        // open host would keep connecting).
        // (A timeout on a loaded machine decides nothing; only a reset does.)
        let killedAt = Date()
        var refused = false
        while !refused && Date().timeIntervalSince(killedAt) < Double(2 + TransitionRunner.kernelGrace + 5) {
            usleep(250_000)
            refused = try setup.connect(from: host, to: S.peerV4, port: 8080, timeout: 1)?.error.contains("Connection refused") == true
        }
        #expect(refused, "version 1 again, not an open host")
        try setup.scenario.tcp(from: host, to: S.peerV4, port: 443)
        // A restarted agent sees the passed deadline and makes version 1 official.
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, extra: ["--collector", "\(S.peerV4):\(Self.collectorPort)"])
        #expect((try setup.status()["ruleset"] as? [String: Any])?["version"] as? Int == 1)
        #expect(!(try setup.tableText().contains("@armed")))
    }

    @Test("SIGTERM inside the window rolls back before exiting; a restart inside it re-arms with the time left")
    func stopAndRestartInsideTheWindow() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        #expect(try setup.cordon(["enforce", "--operator", "gus", "--confirm-within", "60"]).succeeded)
        let deadline = try setup.status()["confirm_deadline"] as? String
        setup.agent.signal(SIGKILL)
        _ = setup.agent.wait(timeout: 10)
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, extra: ["--collector", "\(S.peerV4):\(Self.collectorPort)"])
        #expect(try setup.status()["confirm_deadline"] as? String == deadline, "the same deadline after a crash")
        let table = try setup.tableText()
        #expect(table.contains("meta nfproto != @armed accept"), "re-armed in the kernel")
        #expect(try setup.decisions().last?.action == "reapply")

        // Emptying the switch early would open the host now: the guard puts its elements back.
        #expect(try setup.lab.run(setup.scenario.host, ["nft", "flush", "set", "inet", "cordon", CordonTables.armedSetName]).succeeded)
        var rearmed = false
        for _ in 0..<40 where !rearmed {
            usleep(50_000)
            rearmed = try setup.lab.run(setup.scenario.host, ["nft", "list", "set", "inet", "cordon", CordonTables.armedSetName]).stdout.contains("ipv4")
        }
        #expect(rearmed, "the guard restored the confirmation switch")
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080)?.error.contains("Connection refused") == true)

        #expect(setup.lab.stop(setup.agent) == 0)
        #expect(!(try setup.lab.nftTables(setup.scenario.host).contains("cordon")), "rolled back to discovery, whose table goes at stop")
        let last = try #require(try setup.decisions().last)
        #expect(last.action == "rollback" && last.reason == "agent stopped before the enforcement was confirmed")
    }

    @Test("a malformed command on the socket is refused, and the agent stays up")
    func socketInputIsChecked() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        for request in [#"{"command":"enforce","operator":"x","confirm_within":-10}"#, #"{"command":"enforce","operator":"x","confirm_within":9223372036854775807}"#,
                        #"{"command":"enforce","confirm_within":10}"#, #"{"command":"confirm","operator":""}"#] {
            let answer = try setup.lab.run(nil, ["socat", "-t2", "-", "UNIX-CONNECT:\(setup.scenario.socket)"], input: request + "\n")
            #expect(answer.stdout.contains(#""ok":false"#), "\(request): \(answer.stdout) \(answer.stderr)")
        }
        for (request, code) in [(#"{"command":"reboot"}"#, "unknown_command"), (#"{"v":2,"command":"status"}"#, "unsupported_version"),
                                ("not json", "malformed"), (#"{"command":"isolate"}"#, "missing_field")] {
            let answer = try setup.lab.run(nil, ["socat", "-t2", "-", "UNIX-CONNECT:\(setup.scenario.socket)"], input: request + "\n")
            #expect(answer.stdout.contains(#""error":"\#(code)""#) && answer.stdout.contains(#""ok":false"#), "\(request): \(answer.stdout)")
        }
        #expect(setup.agent.isRunning)
        #expect(try setup.status()["mode"] as? String == "discovery")
    }

    /// A connection to a Unix socket, made in this process (fast enough to hold many at once).
    static func connectUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LabError("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { close(fd); throw LabError("connect \(path): errno \(errno)") }
        return fd
    }

    /// What arrives on `fd` up to a newline or the end, waiting at most `seconds` in all.
    static func readAnswer(_ fd: Int32, seconds: Double) -> String {
        var data = [UInt8]()
        let deadline = Date().addingTimeInterval(seconds)
        while !data.contains(UInt8(ascii: "\n")) && Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) >= 0 else { if errno == EINTR { continue } else { break } }
            guard poller.revents != 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            data += buffer.prefix(count)
        }
        return String(decoding: data, as: UTF8.self)
    }

    @Test("the control socket is 0600; the 65th connection at once is told `busy`; a client that sends no line is told `malformed` after 2 s")
    func controlSocketModeAndLimits() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let socket = setup.scenario.socket
        var info = stat()
        #expect(stat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600, "mode \(String(info.st_mode & 0o777, radix: 8))")
        // 64 connections that send nothing take every place (for the 2 s each may take).
        let idle = try (0..<64).map { _ in try Self.connectUnix(socket) }
        defer { idle.forEach { close($0) } }
        let extra = try Self.connectUnix(socket)
        defer { close(extra) }
        let busy = Self.readAnswer(extra, seconds: 10)
        #expect(busy.contains(#""error":"busy""#) && busy.contains(#""ok":false"#), "\(busy)")
        // None of the 64 ever sends a line: each is answered `malformed`, not left hanging.
        for fd in [idle[0], idle[63]] {
            let answer = Self.readAnswer(fd, seconds: 10)
            #expect(answer.contains(#""error":"malformed""#) && answer.contains("within 2"), "\(answer)")
        }
        #expect(setup.agent.isRunning)
        #expect(try setup.status()["mode"] as? String == "discovery", "served again once the places are free")
    }

    @Test("`cordon log --verify` exits 0 on the agent's log and 1 once an entry was edited in the file")
    func logVerifyFindsAnEditedEntry() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        try setup.enforceAndConfirm()
        #expect(setup.lab.stop(setup.agent) == 0)
        let clean = try setup.cordon(["log", "--verify"])
        #expect(clean.status == 0, "\(clean.stdout)\(clean.stderr)")
        // Someone with write access to the file drops the append-only trigger and changes who enforced.
        let pool = try DatabasePool(path: setup.scenario.database)
        try pool.write { db in
            try db.execute(sql: "DROP TRIGGER decisions_append_only_update")
            try db.execute(sql: "UPDATE decisions SET operator = 'mallory' WHERE action = 'enforce'")
        }
        try pool.close()
        let tampered = try setup.cordon(["log", "--verify"])
        #expect(tampered.status == 1, "\(tampered.stdout)\(tampered.stderr)")
        #expect(!(tampered.stdout + tampered.stderr).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "the problem is named")
    }

    @Test("isolate beside a hung agent (SIGSTOP): the outcome is unknown and nothing is applied around it, the agent isolates once it runs again; beside a lock holder without a socket: refused naming its pid")
    func isolateBesideAHungAgent() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer {
            setup.agent.signal(SIGCONT)
            setup.lab.cleanup()
        }
        let host = setup.scenario.host
        // A stopped agent's socket still takes the request (into its backlog): the CLI waits 10 s
        // for an answer, says the outcome is unknown and does not act around the agent.
        setup.agent.signal(SIGSTOP)
        let isolate = try setup.cordon(["isolate", "--operator", "ivy", "--reason", "hung agent"], timeout: 60)
        #expect(isolate.status == 1, "\(isolate.stdout)\(isolate.stderr)")
        #expect(isolate.stderr.contains("outcome is unknown") && !isolate.stderr.contains("acting directly"), "\(isolate.stderr)")
        #expect(!(try setup.lab.nftTables(host).contains(CordonTables.isolationName)), "nothing applied around the agent")
        // Running again, the agent carries out the request it took.
        setup.agent.signal(SIGCONT)
        try setup.waitUntil("the agent isolates") { try setup.status()["isolated"] as? Bool == true }
        #expect(try setup.decisions().last?.action == "isolate")
        #expect(try setup.cordon(["release", "--operator", "ivy"]).succeeded)

        // No agent answers, and another process holds the database's lock (a command acting):
        // refused, naming the holder's pid; nothing applied.
        #expect(setup.lab.stop(setup.agent) == 0)
        let lock = try ProcessLock(path: setup.scenario.database + ".lock", guarding: "test", holder: "cordon release")
        let refused = try setup.cordon(["isolate", "--operator", "ivy"])
        #expect(refused.status == 1 && refused.stderr.contains("pid \(getpid()) cordon release holds"), "\(refused.stderr)")
        #expect(!(try setup.lab.nftTables(host).contains(CordonTables.isolationName)))
        withExtendedLifetime(lock) {}
    }

    @Test("a slow client and idle connections do not block control; a second agent on the same database is refused and leaves the first intact")
    func controlSurvivesSlowClientsAndASecondAgent() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, socket) = (setup.lab, setup.scenario.socket)
        // One byte every 1.5 s, for 9 s; and 30 connections that never send anything (10 s).
        _ = try lab.spawn(nil, ["sh", "-c", "(for i in 1 2 3 4 5 6; do printf x; sleep 1.5; done) | socat -t1 - UNIX-CONNECT:\(socket)"])
        for _ in 0..<30 { _ = try lab.spawn(nil, ["sh", "-c", "sleep 10 | socat -t1 - UNIX-CONNECT:\(socket)"]) }
        try setup.waitUntil("the 31 clients are connected") {
            try lab.run(nil, ["ss", "-Hx", "state", "connected", "src", socket]).stdout.split(separator: "\n").count >= 31
        }
        // Served in turn, status would wait 2 s (the read deadline) for each of the 31 ahead of it:
        // over a minute. No time is promised; a generous bound still tells the two apart.
        for _ in 0..<3 {
            let started = Date()
            let status = try setup.cordon(["status", "--json"])
            #expect(status.succeeded, "\(status.stderr)")
            #expect(Date().timeIntervalSince(started) < 20, "status answered in \(Date().timeIntervalSince(started)) s")
        }
        // While those clients still hang on: a second agent on the same database and socket is
        // refused at once, naming the holder.
        let second = try lab.run(setup.scenario.host, [setup.cordon, "agent", "--db", setup.scenario.database, "--socket", socket], timeout: 20)
        #expect(second.status == 1, "\(second.stdout)\(second.stderr)")
        #expect(second.stderr.contains("another agent"), "\(second.stderr)")
        // ...and on the same socket with another database: refused too, the socket left alone.
        let third = try lab.run(setup.scenario.host, [setup.cordon, "agent", "--db", lab.directory + "/other.db", "--socket", socket], timeout: 20)
        #expect(third.status == 1 && third.stderr.contains("another agent"), "\(third.stdout)\(third.stderr)")
        #expect(FileManager.default.fileExists(atPath: socket))
        #expect(try setup.cordon(["enforce", "--operator", "ivy"]).succeeded)
        #expect(try setup.cordon(["confirm", "--operator", "ivy"]).succeeded, "a confirm is never held up by another client")
        #expect(try setup.status()["mode"] as? String == "enforce")
        #expect(try setup.tableText().contains("policy drop"))
        #expect(setup.agent.isRunning)
    }

    @Test("a socket directory another user could write to is refused by the agent and by the CLI; a user without rights is told so")
    func socketPathTrust() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        // A directory owned by another user (nobody), and one anybody may write to.
        let foreign = lab.directory + "/foreign", open = lab.directory + "/open"
        for directory in [foreign, open] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        #expect(chown(foreign, 65534, 65534) == 0 && chmod(open, 0o1777) == 0)
        let agent = try lab.run(host, [setup.cordon, "agent", "--db", lab.directory + "/other.db", "--socket", foreign + "/cordon.sock"], timeout: 20)
        #expect(agent.status == 1 && agent.stderr.contains("owned by uid 65534"), "\(agent.stderr)")
        #expect(!FileManager.default.fileExists(atPath: foreign + "/cordon.sock"))
        // A fake agent in the open directory: root's CLI does not talk to it.
        let fake = try lab.spawn(nil, ["socat", "UNIX-LISTEN:\(open)/cordon.sock,fork", "SYSTEM:echo '{\"ok\":true,\"message\":\"isolated\"}'"])
        try setup.waitUntil("the fake socket exists") { FileManager.default.fileExists(atPath: open + "/cordon.sock") }
        let status = try lab.run(nil, [setup.cordon, "status", "--socket", open + "/cordon.sock"])
        #expect(status.status == 1 && status.stderr.contains("writable by group or others"), "\(status.stderr)")
        _ = lab.stop(fake, signal: SIGKILL)
        // Not root: told that the socket is root's, and isolate does not try to act without the agent.
        let nobody = try lab.run(nil, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", setup.cordon, "status",
                                       "--socket", setup.scenario.socket])
        #expect(nobody.status == 1 && nobody.stderr.contains("run cordon as root"), "\(nobody.stderr)")
        let isolate = try lab.run(nil, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", setup.cordon, "isolate",
                                        "--operator", "x", "--socket", lab.directory + "/none.sock", "--db", setup.scenario.database])
        #expect(isolate.status == 1 && isolate.stderr.contains("needs root") && !isolate.stderr.contains("acting directly"), "\(isolate.stderr)")
    }

    @Test("a stored ruleset edited in the database is refused at restart, and the kernel keeps the approved rules")
    func editedRulesetIsNotEnforced() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        try setup.enforceAndConfirm()
        #expect(setup.lab.stop(setup.agent) == 0)
        // Someone with write access to the file drops the append-only trigger and widens the rules.
        let pool = try DatabasePool(path: setup.scenario.database)
        try pool.write { db in
            try db.execute(sql: "DROP TRIGGER rulesets_append_only_update")
            try db.execute(sql: "UPDATE rulesets SET content = replace(content, 'services: [tcp/443]', 'services: [tcp/443, tcp/8080]')")
        }
        try pool.close()
        let log = setup.lab.directory + "/restart.log"
        #expect(throws: LabError.self) {
            setup.agent = try setup.scenario.startAgent(binary: setup.cordon, extra: ["--collector", "\(S.peerV4):\(EnforcementTests.collectorPort)"],
                                                        log: log)
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("does not match its digest"), "\(text)")
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080)?.error.contains("Connection refused") == true,
                "the approved rules stay in force")
    }

    @Test("a network of 5,000 entries × 64 services is enforced as its addresses and its services: its ports pass, others are refused")
    func wideNetworkIsEnforced() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let entries = (0..<5000).map { IPPrefix(IPAddress(ipv4: 0x0A00_0000 + UInt32($0) * 512), length: 24).description } + ["192.0.2.0/24"]
        let ports = ["tcp/443"] + (1..<64).map { "tcp/\(1000 + 7 * $0)" }
        try setup.approve("""
            networks:
              - name: wide
                entries: [\(entries.joined(separator: ", "))]
                services: [\(ports.joined(separator: ", "))]
            outgoing:
              - to: wide
            """)
        let enforce = try setup.cordon(["enforce", "--operator", "ivy"])
        #expect(enforce.succeeded, "\(enforce.stdout)\(enforce.stderr)")
        #expect(try setup.tableText().contains("@allow_out_v4_w1_svc"))
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 443) == nil, "an entry and one of its services")
        #expect(try setup.connect(from: setup.scenario.host, to: S.peerV4, port: 8080)?.error.contains("Connection refused") == true)
    }

    @Test("a collector that cannot be reached through the new rules rolls back at once")
    func unreachableCollectorRollsBack() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup(listen: false)
        defer { setup.lab.cleanup() }
        let before = try setup.tableText()
        let enforce = try setup.cordon(["enforce", "--operator", "carol"])
        #expect(enforce.status == 1)
        #expect(enforce.stderr.contains("collector \(S.peerV4):\(Self.collectorPort) unreachable"), "\(enforce.stderr)")
        #expect(enforce.stderr.contains("rolled back to discovery"), "\(enforce.stderr)")
        #expect(try setup.status()["mode"] as? String == "discovery")
        #expect(try setup.tableText() == before)
        let actions = try setup.decisions().suffix(2).map(\.action)
        #expect(actions == ["enforce", "rollback"])
        #expect(try setup.decisions().suffix(2).first?.outcome.hasPrefix("failed: management channel check failed") == true)
    }

    @Test("after kill -9 the rules stay in force; a restarted agent adopts them in one transaction; a new version swaps atomically")
    func crashRestartAndSwap() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, scenario) = (setup.lab, setup.scenario)
        #expect(try setup.cordon(["enforce", "--operator", "dave"]).succeeded)
        #expect(try setup.cordon(["confirm", "--operator", "dave"]).succeeded)

        setup.agent.signal(SIGKILL)
        _ = setup.agent.wait(timeout: 10)
        #expect(try setup.tableText().contains("policy drop"), "rules outlive the agent")
        #expect(try setup.connect(from: scenario.host, to: S.peerV4, port: 8080) != nil)

        setup.agent = try scenario.startAgent(binary: setup.cordon, extra: ["--collector", "\(S.peerV4):\(Self.collectorPort)"])
        let status = try setup.status()
        #expect(status["mode"] as? String == "enforce")
        #expect(status["confirm_deadline"] is NSNull)
        #expect(try setup.decisions().last?.action == "reapply")
        #expect(try setup.connect(from: scenario.host, to: S.peerV4, port: 8080) != nil)

        // Version 2 adds tcp/8080 out. New connections run across the swap: to 443 (allowed by
        // both versions) each must connect, to 7070 (a listener neither allows) each must be
        // refused by the host's rules. An instant without rules would connect to 7070; one with
        // wrong rules would refuse 443.
        try setup.approve(Self.ruleset.replacingOccurrences(of: "services: [tcp/443]", with: "services: [tcp/443, tcp/8080]"))
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:7070,fork,reuseaddr", "PIPE"])
        try setup.waitUntil("the peer listens on 7070") { try lab.run(scenario.peer, ["ss", "-Hltn", "sport = :7070"]).stdout.contains(":7070") }
        // The listener answers (a round trip from the peer itself, which the host's rules do not
        // see), and the peer counts every packet the host sends to it: a refusal by the host's
        // rules never leaves the host, while a refusal for want of a listener (a reset from the
        // peer) would arrive here first.
        try scenario.tcp(from: scenario.peer, to: S.peerV4, port: 7070)
        let arrivals = try setup.countArrivals(in: scenario.peer, from: S.hostV4, port: 7070)
        let probe = """
            for i in $(seq 1 80); do
              socat -u /dev/null TCP:\(S.peerV4):443,connect-timeout=1 && echo allowed-ok || echo allowed-FAILED
              socat -u /dev/null TCP:\(S.peerV4):7070,connect-timeout=1 2>/dev/null && echo forbidden-OPEN || echo forbidden-ok
            done
            """
        let probeLog = lab.directory + "/probe.log"
        let probes = try lab.spawn(scenario.host, ["sh", "-c", probe], log: probeLog)
        try setup.waitUntil("the probes have begun") { (try? String(contentsOfFile: probeLog, encoding: .utf8))?.contains("forbidden-") == true }
        let swap = try setup.cordon(["enforce", "--operator", "dave"])
        #expect(swap.succeeded, "\(swap.stderr)")
        #expect(probes.wait(timeout: 60) == 0)
        let lines = try String(contentsOfFile: probeLog, encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0 == "allowed-ok" }.count == 80, "\(lines.filter { $0.hasSuffix("FAILED") || $0.hasSuffix("OPEN") })")
        #expect(lines.filter { $0 == "forbidden-ok" }.count == 80)
        #expect(try arrivals() == 0, "every refusal of 7070 came from the host's rules, none from the peer")
        try scenario.tcp(from: scenario.peer, to: S.peerV4, port: 7070)
        #expect(try setup.connect(from: scenario.host, to: S.peerV4, port: 8080) == nil)
        #expect((try setup.status()["ruleset"] as? [String: Any])?["version"] as? Int == 2)
    }
}
