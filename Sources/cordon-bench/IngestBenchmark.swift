import ArgumentParser
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// How fast the agent takes conntrack events, side by side with `conntrack -E`.
///
/// Two namespaces: `gen` sends UDP packets with ever-new source tuples to `host`, where each makes
/// a new conntrack entry (NEW event) that expires a second later (DESTROY event). In `host` the
/// agent and `conntrack -E >/dev/null` listen at the same time, both pinned to CPU 1; the generator
/// is pinned to CPU 0. After the load, the run waits until the host's conntrack table is empty so
/// that every DESTROY has been sent, then compares what each listener read with 2 × flows.
struct IngestBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ingest",
                                                    abstract: "Conntrack event intake: agent vs conntrack -E (needs root).")

    @Option(help: "New flows per second to try, comma-separated.")
    var rates: String = "50000,100000,150000,200000"

    @Option(help: "Seconds of load per run.")
    var duration: Double = 20

    @Option(help: "Runs per rate (medians are reported).")
    var runs: Int = 3

    @Option(help: "Agent receive buffer, MiB.")
    var receiveBuffer: Int = 128

    @Option(help: "CPU mask for the host namespace's receive processing (RPS); 0 leaves it on the generator's CPU.")
    var rps: String = "0"

    @Option(help: "Parallel generator processes, pinned round-robin to the CPUs, splitting the rate.")
    var generators: Int = 1

    @Option(help: "How flows are made: packets (UDP through a veth pair) or netlink (entries created through ctnetlink in the host namespace: no packet path, several times faster).")
    var source: String = "packets"

    @Option(help: "Listeners: both (side by side), agent, or conntrack.")
    var listeners: String = "both"

    func run() throws {
        let rateList = rates.split(separator: ",").compactMap { Double($0) }
        guard !rateList.isEmpty, duration > 0, duration <= 300, runs > 0 else {
            throw ValidationError("need rates, a duration of at most 300 s and at least one run")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        let bench = URL(fileURLWithPath: cordon).deletingLastPathComponent().appendingPathComponent("cordon-bench").path
        guard (1...8).contains(generators) else { throw ValidationError("--generators: 1 to 8") }
        guard ["packets", "netlink"].contains(source) else { throw ValidationError("--source: packets or netlink") }
        guard ["both", "agent", "conntrack"].contains(listeners) else { throw ValidationError("--listeners: both, agent or conntrack") }
        say("# cordon-bench ingest --rates \(rates) --duration \(format(duration, 0)) --runs \(runs) --receive-buffer \(receiveBuffer) --rps \(rps) --listeners \(listeners) --generators \(generators) --source \(source)")
        say("# \(ProcessInfo.processInfo.activeProcessorCount) CPUs; generators pinned round-robin from CPU 0, listeners to CPU 1; receive processing mask \(rps)")
        say("| target/s | achieved/s | flows | agent lost % | agent overruns | agent CPU s/100k ev | conntrack -E lost % | conntrack -E CPU s/100k ev | CPU ratio agent/conntrack |")
        say("|---|---|---|---|---|---|---|---|---|")
        for rate in rateList {
            var results: [RunResult] = []
            for _ in 0..<runs {
                results.append(try measure(rate: rate, cordon: cordon, bench: bench))
            }
            func m(_ f: (RunResult) -> Double) -> Double { median(results.map(f)) }
            say("| \(format(rate, 0)) | \(format(m(\.achieved), 0)) | \(format(m { Double($0.flows) }, 0)) "
                + "| \(format(m(\.agentLoss), 3)) | \(format(m { Double($0.agentOverruns) }, 0)) | \(format(m(\.agentCPUPer100k), 4)) "
                + "| \(format(m(\.conntrackLoss), 3)) | \(format(m(\.conntrackCPUPer100k), 4)) | \(format(m(\.ratio), 2)) |")
            for (i, r) in results.enumerated() {
                say("#   run \(i + 1): \(r.detail)")
            }
        }
    }

    struct RunResult {
        var achieved: Double
        var flows: Int
        var agentEvents: Int
        var agentOverruns: Int
        var agentCPU: Double
        var agentRecorded: Int
        var conntrackEvents: Int
        var conntrackCPU: Double
        var kernelDrops: Int
        var agentPeakRSS: Int
        var agentLoss: Double { agentEvents == 0 ? .nan : 100 * (1 - Double(agentEvents) / Double(2 * max(flows, 1))) }
        var conntrackLoss: Double { conntrackEvents == 0 ? .nan : 100 * (1 - Double(conntrackEvents) / Double(2 * max(flows, 1))) }
        var agentCPUPer100k: Double { agentEvents == 0 ? .nan : agentCPU / Double(agentEvents) * 100_000 }
        var conntrackCPUPer100k: Double { conntrackEvents == 0 ? .nan : conntrackCPU / Double(conntrackEvents) * 100_000 }
        var ratio: Double { agentCPUPer100k / conntrackCPUPer100k }
        var detail: String {
            "flows \(flows), agent events \(agentEvents) (recorded \(agentRecorded) connections, CPU \(format(agentCPU, 2)) s, peak RSS \(format(Double(agentPeakRSS) / 1_048_576, 1)) MiB), "
                + "conntrack -E events \(conntrackEvents) (CPU \(format(conntrackCPU, 2)) s), kernel drops \(kernelDrops)"
        }
    }

    private func measure(rate: Double, cordon: String, bench: String) throws -> RunResult {
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), gen = try lab.namespace("gen")
        let (hostLink, _) = try lab.connect(host, ["192.0.2.10/24"], gen, ["192.0.2.1/24"])
        try lab.run(host, ["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1"])
        if rps != "0" {
            try lab.run(host, ["sh", "-c", "echo \(rps) > /sys/class/net/\(hostLink)/queues/rx-0/rps_cpus"])
        }
        // Entries of one-way UDP expire after 1 s, so the table holds about one second of flows.
        try lab.run(host, ["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=1"])
        // Conntrack on in the namespace whichever listeners run (the agent adds its own table too).
        try lab.run(host, ["nft", "-f", "-"], input: "table inet benchct {\n chain c {\n type filter hook input priority 50;\n ct state established accept\n }\n}\n")
        let database = lab.directory + "/cordon.db", socket = lab.directory + "/cordon.sock"
        let config = lab.directory + "/cordon.yaml"
        try "receive_buffer_mib: \(receiveBuffer)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let withAgent = listeners != "conntrack", withConntrack = listeners != "agent"
        var agent: Child?
        if withAgent {
            agent = try lab.startAgent(in: host, binary: cordon, arguments: ["--db", database, "--socket", socket, "--config", config],
                                       socket: socket, log: lab.directory + "/agent.log", prefix: ["taskset", "-c", "1"])
        }
        let conntrackLog = lab.directory + "/conntrack.err"
        let conntrack = withConntrack
            ? try Child(["ip", "netns", "exec", host, "taskset", "-c", "1", "conntrack", "-E"], errors: conntrackLog) : nil
        defer { conntrack?.signal(SIGKILL); conntrack?.wait(timeout: 5) }
        usleep(500_000)
        let agentBefore = agent.flatMap { ProcessSample.read($0.pid) }
        let conntrackBefore = conntrack.flatMap { ProcessSample.read($0.pid) }

        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let share = 254 / generators
        var children: [(Child, String)] = []
        for index in 0..<generators {
            let output = lab.directory + "/generator-\(index).out"
            let first = 1 + index * share, last = index == generators - 1 ? 254 : (index + 1) * share
            let generator = source == "packets" ? [gen, "generate"] : [host, "inject"]
            children.append((try Child(["ip", "netns", "exec", generator[0], "taskset", "-c", String(index % cpus), bench, generator[1],
                                        "--destination", "192.0.2.10", "--rate", String(rate / Double(generators)),
                                        "--duration", String(duration), "--first-host", String(first), "--last-host", String(last)],
                                       output: output), output))
        }
        var flows = 0
        var slowest = 0.0
        for (child, output) in children {
            guard child.wait(timeout: duration * 2 + 30) == 0 else { throw ValidationError("generator failed") }
            // "sent N failed F seconds S rate R"
            let words = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").split(separator: " ")
            guard words.count >= 8 else { throw ValidationError("generator printed nothing") }
            flows += Int(words[1]) ?? 0
            slowest = max(slowest, Double(words[5]) ?? 0)
        }
        let achieved = Double(flows) / max(slowest, 1e-9)

        // Every entry gone means every DESTROY event has been sent.
        let drainStart = monotonic()
        while monotonic() - drainStart < 90 {
            let count = try lab.run(host, ["conntrack", "-C"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            if count == "0" { break }
            usleep(200_000)
        }
        usleep(1_000_000)
        let agentAfter = agent.flatMap { ProcessSample.read($0.pid) }
        let conntrackAfter = conntrack.flatMap { ProcessSample.read($0.pid) }
        var report: [String: Any] = [:]
        if withAgent {
            let status = try lab.run(nil, [cordon, "status", "--json", "--socket", socket]).stdout
            report = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any] ?? [:]
        }
        var shown = 0
        if let conntrack {
            conntrack.signal(SIGINT)
            conntrack.wait(timeout: 10)
            let conntrackText = (try? String(contentsOfFile: conntrackLog, encoding: .utf8)) ?? ""
            // "conntrack v1.4.7 (conntrack-tools): 123 flow events have been shown."
            shown = conntrackText.split(separator: "\n").first { $0.contains("flow events have been shown") }
                .flatMap { line in line.split(separator: " ").compactMap { Int($0) }.last } ?? 0
        }

        let stats = try lab.run(host, ["conntrack", "-S"]).stdout
        let drops = stats.split(whereSeparator: { $0 == " " || $0 == "\n" }).reduce(0) { total, field in
            for name in ["drop=", "early_drop=", "insert_failed="] where field.hasPrefix(name) {
                return total + (Int(field.dropFirst(name.count)) ?? 0)
            }
            return total
        }

        var recordedConnections = 0
        if let agent {
            _ = lab.stop(agent)
            let recorded = try lab.run(nil, [cordon, "flows", "--json", "--db", database, "--port", "5001"]).stdout
            recordedConnections = ((try? JSONSerialization.jsonObject(with: Data(recorded.utf8))) as? [[String: Any]] ?? [])
                .reduce(0) { $0 + ($1["connections"] as? Int ?? 0) }
        }

        return RunResult(
            achieved: achieved, flows: flows,
            agentEvents: report["events"] as? Int ?? 0, agentOverruns: report["lost_events"] as? Int ?? 0,
            agentCPU: (agentAfter?.cpuSeconds ?? 0) - (agentBefore?.cpuSeconds ?? 0), agentRecorded: recordedConnections,
            conntrackEvents: shown, conntrackCPU: (conntrackAfter?.cpuSeconds ?? 0) - (conntrackBefore?.cpuSeconds ?? 0),
            kernelDrops: drops, agentPeakRSS: agentAfter?.peakRSS ?? 0)
    }
}
