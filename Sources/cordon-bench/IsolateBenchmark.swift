import ArgumentParser
import CordonCore
import CordonLab
import CordonNftables
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Time to contain, and time to restore after tampering.
///
/// Contain: the peer keeps an established UDP flow to the host busy (a datagram every 0.5 ms,
/// echoed by the host); `cordon isolate` runs; the time is from the command's start to the send
/// time of the first datagram whose echo never came back — the first packet the isolation
/// dropped. Through the agent, and directly from the CLI with no agent running. Restore: this
/// process (not the agent) deletes Cordon's table over netlink, like `nft flush ruleset` would,
/// and the time is until the table exists again.
struct IsolateBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "isolate",
                                                    abstract: "Time to contain (isolate) and to restore after tampering (needs root).")

    @Option(help: "Isolations through the agent (each released before the next).") var runs: Int = 30
    @Option(help: "Isolations directly from the CLI, no agent running.") var directRuns: Int = 10
    @Option(help: "Tampering deletions of the table.") var restoreRuns: Int = 10

    static let hostV4 = "192.0.2.10", peerV4 = "192.0.2.20", echoPort: UInt16 = 5001, collectorPort = 9000

    func run() throws {
        guard (1...1000).contains(runs), (0...1000).contains(directRuns), (0...1000).contains(restoreRuns) else {
            throw ValidationError("runs out of range")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        say("# cordon-bench isolate --runs \(runs) --direct-runs \(directRuns) --restore-runs \(restoreRuns)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), peer = try lab.namespace("peer")
        try lab.connect(host, ["\(Self.hostV4)/24"], peer, ["\(Self.peerV4)/24"])
        // The echo runs here, not in socat: a send the isolation drops fails with EPERM, which
        // would end socat; this one ignores it.
        let echo = EchoFlow()
        Thread { [echo] in _ = try? lab.inNamespace(host) { try echo.serve(port: Self.echoPort) } }.start()
        defer { echo.stop() }
        _ = try lab.spawn(peer, ["socat", "TCP-LISTEN:\(Self.collectorPort),fork,reuseaddr", "PIPE"])
        usleep(300_000)
        let database = lab.directory + "/cordon.db", socket = lab.directory + "/cordon.sock"
        let arguments = ["--db", database, "--socket", socket, "--collector", "\(Self.peerV4):\(Self.collectorPort)"]
        var agent = try lab.startAgent(in: host, binary: cordon, arguments: arguments, socket: socket, log: lab.directory + "/agent.log")

        var throughAgent: [Double] = []
        for run in 1...runs {
            throughAgent.append(try contain(lab, host: host, peer: peer, command: [cordon, "isolate", "--operator", "bench", "--db", database, "--socket", socket]))
            try release(lab, host: host, cordon: cordon, database: database, socket: socket)
            say("#   through the agent, run \(run): first dropped packet \(format(throughAgent.last! * 1000, 2)) ms after the command started")
        }

        var restores: [Double] = []
        for run in 0..<restoreRuns {
            restores.append(try restore(lab, host: host))
            say("#   tampering \(run + 1): table back \(format(restores.last! * 1000, 2)) ms after it was deleted")
            usleep(300_000)
        }

        var direct: [Double] = []
        if directRuns > 0 {
            lab.stop(agent)
            for run in 1...directRuns {
                direct.append(try contain(lab, host: host, peer: peer, command: [cordon, "isolate", "--operator", "bench", "--db", database, "--socket", socket]))
                try release(lab, host: host, cordon: cordon, database: database, socket: socket)
                say("#   directly (no agent), run \(run): first dropped packet \(format(direct.last! * 1000, 2)) ms after the command started")
            }
            agent = try lab.startAgent(in: host, binary: cordon, arguments: arguments, socket: socket, log: lab.directory + "/agent.log")
        }
        lab.stop(agent)

        say("| measurement | runs | median ms | p99 ms | max ms |")
        say("|---|---|---|---|---|")
        for (name, values) in [("contain, through the agent", throughAgent), ("contain, directly from the CLI (no agent)", direct),
                               ("restore after the table was deleted", restores)] where !values.isEmpty {
            say("| \(name) | \(values.count) | \(format(median(values) * 1000, 2)) | \(format(percentile(values, 0.99) * 1000, 2)) | \(format(values.max()! * 1000, 2)) |")
        }
    }

    private func release(_ lab: Lab, host: String, cordon: String, database: String, socket: String) throws {
        let result = try lab.run(host, [cordon, "release", "--operator", "bench", "--db", database, "--socket", socket], timeout: 60)
        guard result.succeeded else { throw ValidationError("release failed: \(result.stderr)") }
        usleep(200_000)
    }

    /// Runs `command` in the host namespace while the peer's flow is busy; returns seconds from
    /// the command's start to the send time of the first datagram never echoed.
    private func contain(_ lab: Lab, host: String, peer: String, command: [String]) throws -> Double {
        let flow = EchoFlow()
        let sender = Thread { [flow] in
            _ = try? lab.inNamespace(peer) { try flow.run(to: Self.hostV4, port: Self.echoPort) }
        }
        sender.start()
        // Established: echoes are coming back.
        let started = monotonic()
        while flow.echoed == 0 && monotonic() - started < 5 { usleep(1000) }
        guard flow.echoed > 0 else { flow.stop(); throw ValidationError("the echo flow did not start") }
        usleep(50_000)
        let commandStart = monotonic()
        let result = try lab.run(host, command, timeout: 30)
        guard result.succeeded else { flow.stop(); throw ValidationError("isolate failed: \(result.stderr)") }
        usleep(200_000)
        flow.stop()
        guard let firstLost = flow.firstUnanswered(after: commandStart) else {
            throw ValidationError("no datagram was dropped: isolation did not contain the flow")
        }
        return max(0, firstLost - commandStart)
    }

    /// Deletes Cordon's table from this process and waits for the agent's guard to put it back.
    private func restore(_ lab: Lab, host: String) throws -> Double {
        try lab.inNamespace(host) {
            let backend = NftablesBackend()
            guard try backend.handle(of: CordonTables.baseName) != nil else { throw ValidationError("no table to tamper with") }
            let start = monotonic()
            try backend.remove(table: CordonTables.baseName)
            while monotonic() - start < 10 {
                if try backend.handle(of: CordonTables.baseName) != nil { return monotonic() - start }
                usleep(500)
            }
            throw ValidationError("the table was not restored within 10 s")
        }
    }
}

/// A UDP flow of sequence-numbered datagrams every 0.5 ms, with the send time of each and
/// whether its echo came back.
final class EchoFlow: Sendable {
    private struct State {
        var sent: [Double] = []
        var answered = Set<UInt32>()
        var stopping = false
    }
    private let state = Mutex(State())

    var echoed: Int { state.withLock { $0.answered.count } }
    func stop() { state.withLock { $0.stopping = true } }

    /// The send time of the first datagram after the last one answered: where the flow was cut
    /// (a stray loss earlier is not the isolation's). nil when the flow was never cut.
    func firstUnanswered(after time: Double) -> Double? {
        state.withLock { s in
            guard let lastAnswered = s.answered.max().map(Int.init), lastAnswered + 1 < s.sent.count else { return nil }
            // Give the last 20 ms no verdict: their echoes may still have been in flight.
            guard s.sent[lastAnswered + 1] < (s.sent.last ?? 0) - 0.02 else { return nil }
            return max(time, s.sent[lastAnswered + 1])
        }
    }

    /// Echoes every datagram to its sender until stopped; failed sends (dropped) are ignored.
    func serve(port: UInt16) throws {
        let fd = socket(AF_INET, datagramSocket, 0)
        guard fd >= 0 else { throw ValidationError("udp socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ValidationError("bind: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 64)
        var peer = sockaddr_storage()
        while !state.withLock({ $0.stopping }) {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let received = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
            }
            guard received > 0 else { continue }
            _ = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buffer, received, 0, $0, length) }
            }
        }
    }

    func run(to address: String, port: UInt16) throws {
        let fd = socket(AF_INET, datagramSocket, 0)
        guard fd >= 0 else { throw ValidationError("udp socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // One source port for every run: the host's echo server answers the first peer it saw.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = UInt16(40_000).bigEndian
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ValidationError("bind: \(String(cString: strerror(errno)))") }
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &target.sin_addr)
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ValidationError("connect: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 100)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sequence: UInt32 = 0
        var next = monotonic()
        let deadline = next + 60
        while !state.withLock({ $0.stopping }) && monotonic() < deadline {
            if monotonic() >= next {
                var payload = sequence
                state.withLock { $0.sent.append(monotonic()) }
                _ = send(fd, &payload, 4, 0)
                sequence += 1
                next += 0.0005
            }
            var reply: UInt32 = 0
            while recv(fd, &reply, 4, Int32(MSG_DONTWAIT)) == 4 { state.withLock { _ = $0.answered.insert(reply) } }
            usleep(50)
        }
    }
}
