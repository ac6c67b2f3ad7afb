import CordonAgent
import CordonCore
import CordonLab
import CordonStore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Emergency isolation in the discovery topology (see `EnforcementTests.Setup`): the collector is
/// an echo server on the peer, which is also the host's resolver (udp/53 echo).
@Suite(.serialized) struct IsolationTests {
    typealias S = DiscoveryScenario
    typealias Setup = EnforcementTests.Setup

    /// True when a TCP connection from `namespace` is accepted within a second.
    static func connects(_ setup: Setup, from namespace: String, to address: String, port: Int) throws -> Bool {
        try setup.connect(from: namespace, to: address, port: port, timeout: 1) == nil
    }

    @Test("isolation drops new and established traffic, the admin's session included, while the collector channel and DNS live")
    func isolationCutsEverythingButTheManagementChannel() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, scenario) = (setup.lab, setup.scenario)
        try setup.hostEcho(port: 5555)
        // Two sessions that write only after the isolation: the admin's shell-like session in,
        // and the agent-like session to the collector out.
        let admin = try setup.lateWrite(from: scenario.peer, to: S.hostV4, port: 5555, word: "admin-alive", delay: 2,
                                        log: lab.directory + "/admin.log")
        let channel = try setup.lateWrite(from: scenario.host, to: S.peerV4, port: EnforcementTests.collectorPort, word: "channel-alive",
                                          delay: 2, log: lab.directory + "/channel.log")

        let isolate = try setup.cordon(["isolate", "--operator", "ivy", "--reason", "compromised"])
        #expect(isolate.succeeded, "\(isolate.stdout)\(isolate.stderr)")
        #expect(try setup.status()["isolated"] as? Bool == true)

        _ = admin.wait(timeout: 15)
        _ = channel.wait(timeout: 15)
        #expect(!(try String(contentsOfFile: lab.directory + "/admin.log", encoding: .utf8)).contains("admin-alive"), "the admin's session died")
        #expect(try String(contentsOfFile: lab.directory + "/channel.log", encoding: .utf8).contains("channel-alive"), "the collector channel lived")
        #expect(try Self.connects(setup, from: scenario.host, to: S.peerV4, port: EnforcementTests.collectorPort))
        try scenario.udp(from: scenario.host, to: S.peerV4, port: 53)
        #expect(!(try Self.connects(setup, from: scenario.host, to: S.peerV4, port: 443)), "new connections out are dropped")
        #expect(!(try Self.connects(setup, from: scenario.peer, to: S.hostV4, port: 22)), "new connections in are dropped")
        #expect(throws: LabError.self) { try scenario.ping(from: scenario.peer, to: S.hostV4) }

        // Isolating again is a recorded no-op.
        let again = try setup.cordon(["isolate", "--operator", "ivy"])
        #expect(again.succeeded && again.stdout.contains("already isolated"), "\(again.stdout)\(again.stderr)")
        let actions = try FlowStore(readingFrom: scenario.database).actions()
        #expect(actions.map(\.status) == [.applied, .noop])
        let log = try setup.decisions().filter { $0.action == "isolate" }
        #expect(log.map(\.outcome.first) == ["s", "n"])
        #expect(log.first?.managementWhitelist.contains(.init(protocol: "tcp", address: S.peerV4, port: UInt16(EnforcementTests.collectorPort))) == true)
        #expect(log.first?.reason == "compromised")
    }

    @Test("release returns a discovery host to open and an enforcing host to exactly its ruleset")
    func releaseRestoresTheExactPreviousMode() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let host = setup.scenario.host

        #expect(try setup.cordon(["isolate", "--operator", "ivy"]).succeeded)
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 8080)))
        let release = try setup.cordon(["release", "--operator", "ivy"])
        #expect(release.succeeded, "\(release.stderr)")
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: 8080), "discovery: open again")
        #expect(!(try setup.lab.nftTables(host).contains(CordonTables.isolationName)))

        try setup.enforceAndConfirm()
        func steady(_ text: String) -> String { text.replacingOccurrences(of: #"packets \d+ bytes \d+"#, with: "", options: .regularExpression) }
        let enforced = steady(try setup.tableText())
        #expect(try setup.cordon(["isolate", "--operator", "ivy"]).succeeded)
        #expect(try setup.cordon(["release", "--operator", "ivy"]).succeeded)
        #expect(steady(try setup.tableText()) == enforced)
        #expect(try setup.status()["mode"] as? String == "enforce")
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: 443))
        #expect(try setup.connect(from: host, to: S.peerV4, port: 8080)?.error.contains("Connection refused") == true)
        #expect(try FlowStore(readingFrom: setup.scenario.database).actions().map(\.status) == [.applied, .applied, .applied, .applied])
    }

    @Test("a release whose collector check fails isolates again, logs the escalation and exits 1")
    func failedReleaseReIsolates() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        #expect(try setup.cordon(["isolate", "--operator", "ivy"]).succeeded)
        if let listener = setup.collectorListener { setup.lab.stop(listener, signal: SIGKILL) }
        let started = Date()
        let releasing = try setup.lab.spawn(setup.scenario.host, [setup.cordon, "release", "--operator", "ivy", "--db", setup.scenario.database,
                                                                  "--socket", setup.scenario.socket], log: setup.lab.directory + "/release.log")
        // While the release checks (no lock held): status answers at once and says so, and the
        // host is still isolated from everything but the channel.
        try setup.waitUntil("the release is checking") { try setup.status()["releasing"] as? Bool == true }
        // Each answer comes while the release still checks: status did not wait for it.
        for _ in 0..<5 {
            let status = try setup.status()
            #expect(status["isolated"] as? Bool == false)
            #expect(status["releasing"] as? Bool == true, "status waited for the release")
            #expect(releasing.isRunning)
        }
        let release = CommandResult(status: releasing.wait(timeout: 90) ?? -1, stdout: "",
                                    stderr: (try? String(contentsOfFile: setup.lab.directory + "/release.log", encoding: .utf8)) ?? "")
        #expect(release.status == 1)
        #expect(release.stderr.contains("isolated again"), "\(release.stderr)")
        #expect(Date().timeIntervalSince(started) >= TransitionRunner.releaseCheckSeconds - 0.5, "it kept trying for the whole check")
        #expect(try setup.status()["isolated"] as? Bool == true)
        #expect(try setup.lab.nftTables(setup.scenario.host).contains(CordonTables.isolationName))
        let tail = try setup.decisions().suffix(2)
        #expect(tail.map(\.action) == ["release", "isolate"])
        #expect(tail.first?.outcome.hasPrefix("failed: management channel check failed") == true)
        #expect(tail.last?.operator == "cordon-agent")
        #expect(try FlowStore(readingFrom: setup.scenario.database).actions().last?.status == .failed)
    }

    @Test("SIGTERM during a release's check: the agent isolates again and the waiting CLI says the outcome is unknown, acting on nothing")
    func stopDuringAReleaseCheck() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        #expect(try setup.cordon(["isolate", "--operator", "ivy"]).succeeded)
        if let listener = setup.collectorListener { setup.lab.stop(listener, signal: SIGKILL) }
        let release = try setup.lab.spawn(setup.scenario.host, [setup.cordon, "release", "--operator", "ivy", "--db", setup.scenario.database,
                                                                "--socket", setup.scenario.socket], log: setup.lab.directory + "/release.log")
        try setup.waitUntil("the release is checking") { try setup.status()["releasing"] as? Bool == true }
        setup.agent.signal(SIGTERM)
        #expect(release.wait(timeout: 30) == 1)
        let output = (try? String(contentsOfFile: setup.lab.directory + "/release.log", encoding: .utf8)) ?? ""
        #expect(output.contains("outcome is unknown") && !output.contains("acting directly"), "\(output)")
        #expect(try setup.lab.nftTables(setup.scenario.host).contains(CordonTables.isolationName), "isolated again at stop")
        #expect(!(try Self.connects(setup, from: setup.scenario.host, to: S.peerV4, port: 443)))
    }

    @Test("the guard undoes `nft flush ruleset`, a foreign rule and a dormant overlay, and never restores the agent's own changes")
    func guardRestoresTables() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        try setup.enforceAndConfirm()
        #expect(try setup.cordon(["isolate", "--operator", "ivy"]).succeeded)
        usleep(500_000)
        #expect(try setup.status()["guard_restores"] as? Int == 0, "the agent's own transactions are not tampering")

        // Restored on the notification of the foreign commit; no time is promised, so the wait
        // is generous (below the guard's 30 s periodic check, which would restore it too).
        func waitFor(_ condition: () throws -> Bool) rethrows -> Bool {
            for _ in 0..<400 {
                if try condition() { return true }
                usleep(50_000)
            }
            return false
        }
        #expect(try lab.run(host, ["nft", "flush", "ruleset"]).succeeded)
        let restored = try waitFor {
            let tables = try lab.nftTables(host)
            return tables.contains("table inet cordon\n") && tables.contains(CordonTables.isolationName)
        }
        #expect(restored, "inet cordon and the overlay restored")
        #expect(try setup.tableText().contains("policy drop"))
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "still isolated")

        // A rule slipped in at the top of the input chain goes again.
        #expect(try lab.run(host, ["nft", "insert", "rule", "inet", "cordon", "input", "tcp", "dport", "5555", "accept"]).succeeded)
        let removed = try waitFor { !(try setup.tableText().contains("tcp dport 5555 accept")) }
        #expect(removed, "the foreign rule removed")
        // Marking the overlay dormant would switch isolation off without removing anything.
        #expect(try lab.run(host, ["nft", "add", "table", "inet", CordonTables.isolationName, "{ flags dormant; }"]).succeeded)
        let awake = try waitFor { !(try lab.run(host, ["nft", "list", "table", "inet", CordonTables.isolationName]).stdout.contains("dormant")) }
        #expect(awake, "the overlay awake again")
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "still isolated")
        let status = try setup.status()
        #expect((status["guard_restores"] as? Int ?? 0) >= 3)
        #expect(status["degraded"] as? Bool == false)
        let restores = try setup.decisions().filter { $0.action == "restore" }
        #expect(restores.count >= 2 && restores.allSatisfy { $0.outcome == "success" })
        #expect(restores.first?.reason.contains("table inet cordon removed") == true, "\(restores.first?.reason ?? "")")
    }

    @Test("bursts of `nft flush ruleset` never leave the host unenforced while the agent says it enforces")
    func flushBurstsNeverLoseEnforcement() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        try setup.enforceAndConfirm()

        // The adversarial recipe: six rounds of 20 flushes with 0-90 ms between them. A flush that
        // lands right after one of the agent's own restores must not become its idea of "installed".
        for round in 1...6 {
            let pauses = (0..<20).map { _ in String(format: "%.3f", Double.random(in: 0...0.09)) }
            let script = pauses.map { "nft flush ruleset; sleep \($0)" }.joined(separator: "; ")
            #expect(try lab.run(host, ["sh", "-c", script], timeout: 30).succeeded)
            // The promise: the tables come back once the foreign changes stop, or the agent says
            // loudly (degraded, exit 1) that it cannot keep them. No time is promised: a generous
            // bound (20 s, below the guard's 30 s periodic check).
            var restored = false
            let started = Date()
            while !restored && Date().timeIntervalSince(started) < 20 {
                restored = (try? setup.tableText())?.contains("policy drop") == true
                if !restored { usleep(50_000) }
            }
            let status = try setup.cordon(["status"])
            if !restored {
                #expect(status.status == 1 && status.stderr.contains("degraded"),
                        "round \(round): inet cordon is not back and status says: \(status.stdout)\(status.stderr)")
            }
            #expect(restored, "round \(round): the flush burst ended, so a restore must succeed")
            #expect(try setup.connect(from: host, to: S.peerV4, port: 8080)?.error.contains("Connection refused") == true,
                    "round \(round): unapproved traffic is refused")
            usleep(useconds_t.random(in: 2_000_000...3_000_000))
        }
        // Quiet again: the periodic view agrees, and the agent is not degraded.
        let status = try setup.cordon(["status"])
        #expect(status.status == 0, "\(status.stdout)\(status.stderr)")
        #expect(try setup.status()["mode"] as? String == "enforce")
    }

    @Test("when restores keep failing the agent escalates: degraded, logged, `cordon status` exits 1; it recovers once a restore succeeds")
    func guardEscalatesAndRecovers() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        // Another program takes the table's name with the kernel's "owner" flag: while its socket
        // stays open (nft -i, fed for 6 s), nobody else may create or change that table.
        let squatter = try lab.spawn(host, ["sh", "-c", "(echo 'delete table inet cordon'; echo 'add table inet cordon { flags owner; }'; sleep 6) | nft -i"])
        // `status --json` exits 1 when degraded, after printing: read its output whatever the exit.
        func degradedNow() throws -> Bool? {
            let output = try setup.cordon(["status", "--json"]).stdout
            return (try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])?["degraded"] as? Bool
        }
        var degraded = false
        let started = Date()
        while !degraded && Date().timeIntervalSince(started) < 6 {
            usleep(100_000)
            degraded = try degradedNow() ?? false
        }
        #expect(degraded, "three failed restores in a row")
        let status = try setup.cordon(["status"])
        #expect(status.status == 1 && status.stderr.contains("degraded"), "\(status.stdout)\(status.stderr)")
        #expect(try setup.decisions().contains { $0.action == "escalate" })
        #expect(try setup.decisions().filter { $0.action == "restore" }.prefix(3).allSatisfy { $0.outcome.hasPrefix("failed") })

        // The squatter leaves (its table goes with its socket); the next restore succeeds.
        _ = squatter.wait(timeout: 15)
        var recovered = false
        for _ in 0..<100 where !recovered {
            usleep(100_000)
            recovered = try degradedNow() == false
        }
        #expect(recovered)
        #expect(try setup.tableText().contains("policy accept"), "discovery's table is back")
        #expect(try setup.cordon(["status"]).status == 0)
    }

    @Test("a full disk does not prevent isolation, through the agent or without it; the restarted agent adopts the unrecorded overlay")
    func isolationSurvivesAFullDisk() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        // The database on a small filesystem of its own, which the test then fills.
        let small = lab.directory + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        #expect(try lab.run(nil, ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small]).succeeded)
        defer { _ = try? lab.run(nil, ["umount", "-l", small]) }
        let database = small + "/cordon.db"
        let collector = ["--collector", "\(S.peerV4):\(EnforcementTests.collectorPort)"]
        _ = lab.stop(setup.agent)
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, database: database, extra: collector)
        func cordon(_ arguments: [String]) throws -> CommandResult {
            try lab.run(host, [setup.cordon] + arguments + ["--db", database, "--socket", setup.scenario.socket])
        }
        func fill() throws {
            _ = try lab.run(nil, ["sh", "-c", "i=0; while dd if=/dev/zero of=\(small)/fill.$i bs=4k count=64 2>/dev/null; do i=$((i+1)); done; "
                                  + "dd if=/dev/zero of=\(small)/last bs=512 2>/dev/null; true"])
        }
        try fill()
        // Through the agent: its database writes fail, the isolation does not.
        let through = try cordon(["isolate", "--operator", "ivy", "--reason", "disk full"])
        #expect(through.succeeded && through.stdout.contains("could not record"), "\(through.stdout)\(through.stderr)")
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "isolated")
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: EnforcementTests.collectorPort))

        // The agent down, the overlay gone, the disk still full: the CLI isolates directly.
        _ = lab.stop(setup.agent, signal: SIGKILL)
        #expect(try lab.run(host, ["nft", "delete", "table", "inet", CordonTables.isolationName]).succeeded)
        try fill()
        let direct = try cordon(["isolate", "--operator", "ivy", "--reason", "disk full, no agent"])
        #expect(direct.succeeded && direct.stdout.contains("could not record"), "\(direct.stdout)\(direct.stderr)")
        #expect(try lab.nftTables(host).contains(CordonTables.isolationName))
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "isolated")

        // Space again: the restarted agent says the host is isolated, whatever was recorded.
        #expect(try lab.run(nil, ["sh", "-c", "rm -f \(small)/fill.* \(small)/last"]).succeeded)
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, database: database, extra: collector)
        let status = try cordon(["status", "--json"])
        #expect((try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["isolated"] as? Bool == true,
                "\(status.stdout)\(status.stderr)")
        #expect(try cordon(["release", "--operator", "ivy"]).succeeded)
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: 443))
    }

    @Test("""
        after a clean stop, with the database's filesystem full (no -shm to open it through), isolate without an agent \
        still isolates, says on stderr it is not recorded and exits 0; release refuses; the agent started later adopts it loudly
        """)
    func isolationWithoutTheAgentOnAFullDiskAfterACleanStop() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let (lab, host) = (setup.lab, setup.scenario.host)
        let small = lab.directory + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        #expect(try lab.run(nil, ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small]).succeeded)
        defer { _ = try? lab.run(nil, ["umount", "-l", small]) }
        let database = small + "/cordon.db"
        let collector = ["--collector", "\(S.peerV4):\(EnforcementTests.collectorPort)"]
        _ = lab.stop(setup.agent)
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, database: database, extra: collector)
        #expect(lab.stop(setup.agent) == 0, "a clean stop")
        // The last process to close a WAL database removes its -wal and -shm (here the test's,
        // as `cordon approve` run after the stop would): SQLite must then create the -shm to open it.
        do { _ = try FlowStore(existing: database) }
        for suffix in ["-wal", "-shm"] {
            try #require(!FileManager.default.fileExists(atPath: database + suffix), "no \(suffix) after the last close")
        }
        func cordon(_ arguments: [String]) throws -> CommandResult {
            try lab.run(host, [setup.cordon] + arguments + ["--db", database, "--socket", setup.scenario.socket])
        }
        #expect(try lab.run(nil, ["sh", "-c", "i=0; while dd if=/dev/zero of=\(small)/fill.$i bs=4k count=64 2>/dev/null; do i=$((i+1)); done; "
                                  + "dd if=/dev/zero of=\(small)/last bs=512 2>/dev/null; df --output=avail \(small) | tail -n 1"]).stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines) == "0", "the filesystem is full")

        let isolate = try cordon(["isolate", "--operator", "ivy", "--reason", "disk filled"])
        #expect(isolate.status == 0, "the host is isolated: \(isolate.stdout)\(isolate.stderr)")
        #expect(isolate.stderr.contains("acting directly"))
        #expect(isolate.stderr.contains("isolated; NOT recorded: the database at \(database) cannot be written (No space left on device)"),
                "\(isolate.stderr)")
        #expect(try lab.nftTables(host).contains(CordonTables.isolationName))
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "isolated")
        #expect(!(try Self.connects(setup, from: setup.scenario.peer, to: S.hostV4, port: 22)), "isolated inbound")
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: EnforcementTests.collectorPort), "the collector channel lives")
        try setup.scenario.udp(from: host, to: S.peerV4, port: 53)

        // Loosening must be on record: refused, and nothing changed.
        let refused = try cordon(["release", "--operator", "ivy"])
        #expect(refused.status == 1 && refused.stderr.contains("a release must be on record") && refused.stderr.contains("nothing changed"),
                "\(refused.stdout)\(refused.stderr)")
        #expect(try lab.nftTables(host).contains(CordonTables.isolationName))
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "still isolated")

        // Space again: the agent keeps the isolation it finds without a record, logs it as a
        // reapply and warns; a release then goes through the collector check as any other.
        #expect(try lab.run(nil, ["sh", "-c", "rm -f \(small)/fill.* \(small)/last"]).succeeded)
        let log = lab.directory + "/agent-after.log"
        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, database: database, extra: collector, log: log)
        let status = try cordon(["status", "--json"])
        #expect((try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["isolated"] as? Bool == true,
                "\(status.stdout)\(status.stderr)")
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("warning cordon agent: an isolation overlay was in the kernel without a record"))
        let store = try FlowStore(readingFrom: database)
        let adopted = try #require(try store.decisions().last)
        #expect(adopted.action == "reapply" && adopted.operator == Engine.agentOperator && adopted.reason.contains("unrecorded isolation overlay"),
                "\(adopted)")
        #expect(try store.actions().isEmpty, "the CLI's request was never recorded")
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)), "still isolated")
        let release = try cordon(["release", "--operator", "ivy"])
        #expect(release.succeeded, "\(release.stdout)\(release.stderr)")
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: 443))
        #expect(try store.verifyDecisions().isEmpty)
    }

    @Test("isolate without an agent refuses a database path that does not exist, creating nothing and isolating nothing")
    func isolateRefusesAMistypedDatabase() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let setup = try Setup()
        defer { setup.lab.cleanup() }
        _ = setup.lab.stop(setup.agent)
        let mistyped = setup.lab.directory + "/cordn.db"
        let result = try setup.lab.run(setup.scenario.host, [setup.cordon, "isolate", "--operator", "ivy", "--db", mistyped,
                                                             "--socket", setup.scenario.socket])
        #expect(result.status == 1 && result.stderr.contains("no Cordon database at \(mistyped)"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: mistyped))
        #expect(!(try setup.lab.nftTables(setup.scenario.host).contains(CordonTables.isolationName)))
    }

    @Test("with the agent killed, isolate applies directly; the restarted agent adopts it; a release ends it")
    func isolateWithoutTheAgent() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        var setup = try Setup()
        defer { setup.lab.cleanup() }
        let host = setup.scenario.host
        setup.agent.signal(SIGKILL)
        _ = setup.agent.wait(timeout: 10)

        let isolate = try setup.cordon(["isolate", "--operator", "ivy", "--reason", "agent down"])
        #expect(isolate.succeeded, "\(isolate.stderr)")
        #expect(isolate.stderr.contains("acting directly"))
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)))
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: EnforcementTests.collectorPort))
        #expect(try FlowStore(readingFrom: setup.scenario.database).actions().last?.detail.contains("directly from the CLI") == true)

        setup.agent = try setup.scenario.startAgent(binary: setup.cordon, extra: ["--collector", "\(S.peerV4):\(EnforcementTests.collectorPort)"])
        #expect(try setup.status()["isolated"] as? Bool == true, "adopted at start")
        #expect(!(try Self.connects(setup, from: host, to: S.peerV4, port: 443)))
        #expect(try setup.cordon(["release", "--operator", "ivy"]).succeeded)
        #expect(try Self.connects(setup, from: host, to: S.peerV4, port: 443))
        #expect(try FlowStore(readingFrom: setup.scenario.database).verifyDecisions().isEmpty)
    }
}
