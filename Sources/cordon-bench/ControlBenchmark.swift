import ArgumentParser
import CordonAgent
import CordonCore
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// How long `status` takes on the control socket while the agent is busy with something slow:
/// a release's collector check (10 s against a dead collector), an enforce of a large ruleset
/// with its check, and guard restores under a burst of `nft flush ruleset`. Each request is one
/// round trip on the socket (connect, request, answer), as `cordon status` makes it, without the
/// CLI's own start-up; the CLI's whole run is measured idle for comparison.
struct ControlBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "control",
                                                    abstract: "Control latency while slow transitions run (needs root).")

    @Option(help: "CIDRs in the enforced ruleset.") var entries: Int = 10_000
    @Option(help: "Enforce/discover rounds.") var enforceRuns: Int = 5
    @Option(help: "Seconds between two status requests.") var interval: Double = 0.02

    static let hostV4 = "192.0.2.10", peerV4 = "192.0.2.20", collectorPort = 9000

    func run() throws {
        guard (10...100_000).contains(entries), (1...100).contains(enforceRuns), (0.001...1).contains(interval) else {
            throw ValidationError("out of range")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        say("# cordon-bench control --entries \(entries) --enforce-runs \(enforceRuns) --interval \(interval)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), peer = try lab.namespace("peer")
        try lab.connect(host, ["\(Self.hostV4)/24"], peer, ["\(Self.peerV4)/24"])
        var collector = try lab.spawn(peer, ["socat", "TCP-LISTEN:\(Self.collectorPort),fork,reuseaddr", "PIPE"])
        usleep(300_000)
        let database = lab.directory + "/cordon.db", socket = lab.directory + "/cordon.sock"
        let common = ["--db", database, "--socket", socket]
        let agent = try lab.startAgent(in: host, binary: cordon, arguments: common + ["--collector", "\(Self.peerV4):\(Self.collectorPort)"],
                                       socket: socket, log: lab.directory + "/agent.log")
        defer { lab.stop(agent) }
        let file = lab.directory + "/large.yaml"
        try RulesetText.render(SyntheticRuleset.outgoing(entries: entries)).write(toFile: file, atomically: true, encoding: .utf8)
        guard try lab.run(host, [cordon, "approve", file, "--operator", "bench", "--accept-risk"] + common).succeeded else {
            throw ValidationError("approve failed")
        }
        let client = ControlClient(path: socket)

        /// Status round trips, one every `interval`, while `busy` runs in the background.
        func during(_ busy: [String]) throws -> (latencies: [Double], busySeconds: Double) {
            let started = monotonic()
            let child = try lab.spawn(host, busy)
            var latencies: [Double] = []
            while child.isRunning && latencies.count < 100_000 && monotonic() - started < 120 {
                let begin = monotonic()
                _ = try client.status()
                latencies.append(monotonic() - begin)
                usleep(useconds_t(interval * 1e6))
            }
            _ = child.wait(timeout: 60)
            return (latencies, monotonic() - started)
        }

        var rows: [(String, [Double], Double)] = []
        var idle: [Double] = []
        for _ in 0..<200 {
            let begin = monotonic()
            _ = try client.status()
            idle.append(monotonic() - begin)
        }
        rows.append(("idle", idle, 0))
        var cli: [Double] = []
        for _ in 0..<20 {
            let begin = monotonic()
            _ = try lab.run(nil, [cordon, "status", "--socket", socket])
            cli.append(monotonic() - begin)
        }
        rows.append(("idle, the whole `cordon status` process", cli, 0))

        // A release whose check fails for its whole 10 s (the collector is gone), then isolates again.
        guard try lab.run(host, [cordon, "isolate", "--operator", "bench"] + common).succeeded else { throw ValidationError("isolate failed") }
        lab.stop(collector, signal: SIGKILL)
        let release = try during([cordon, "release", "--operator", "bench"] + common)
        rows.append(("during a release's failing 10 s collector check", release.latencies, release.busySeconds))
        collector = try lab.spawn(peer, ["socat", "TCP-LISTEN:\(Self.collectorPort),fork,reuseaddr", "PIPE"])
        usleep(300_000)
        guard try lab.run(host, [cordon, "release", "--operator", "bench"] + common, timeout: 60).succeeded else { throw ValidationError("release failed") }

        var enforcing: [Double] = [], enforceSeconds = 0.0
        for _ in 0..<enforceRuns {
            let round = try during([cordon, "enforce", "--operator", "bench"] + common)
            enforcing += round.latencies
            enforceSeconds = max(enforceSeconds, round.busySeconds)
            guard try lab.run(host, [cordon, "discover", "--operator", "bench"] + common).succeeded else { throw ValidationError("discover failed") }
        }
        rows.append(("during enforce of \(entries) entries (and its check)", enforcing, enforceSeconds))

        guard try lab.run(host, [cordon, "enforce", "--operator", "bench"] + common).succeeded,
              try lab.run(host, [cordon, "confirm", "--operator", "bench"] + common).succeeded else { throw ValidationError("enforce failed") }
        let flushes = try during(["sh", "-c", "for i in $(seq 40); do nft flush ruleset; sleep 0.05; done"])
        rows.append(("during guard restores (40 × nft flush ruleset, 50 ms apart)", flushes.latencies, flushes.busySeconds))

        say("| while | status requests | median ms | p99 ms | max ms | the slow work took s |")
        say("|---|---|---|---|---|---|")
        for (name, values, seconds) in rows {
            say("| \(name) | \(values.count) | \(format(median(values) * 1000, 2)) | \(format(percentile(values, 0.99) * 1000, 2)) | "
                + "\(format(values.max()! * 1000, 2)) | \(seconds > 0 ? format(seconds, 2) : "-") |")
        }
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}
