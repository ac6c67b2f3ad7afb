import ArgumentParser
import CordonCore
import CordonLab
import CordonStore
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `cordon propose` and `cordon review` over a database of many flow aggregates, run as the real
/// CLI; wall time and the child's peak RSS. No kernel, no root needed.
struct ProposeBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "propose",
                                                    abstract: "propose and review over 10^5 flow aggregates: wall time, peak RSS.")

    @Option(help: "Flow aggregates in the database.") var aggregates: Int = 100_000
    @Option(help: "Runs (medians reported).") var runs: Int = 5
    @Flag(help: "Review with --json (the default is the text report).") var json = false

    func run() throws {
        guard aggregates > 0, aggregates <= 5_000_000, runs > 0 else { throw ValidationError("out of range") }
        let cordon = try DiscoveryScenario.cordonBinary()
        let directory = NSTemporaryDirectory() + "cordon-bench-propose-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = directory + "/cordon.db"
        try fill(database)
        say("# cordon-bench propose --aggregates \(aggregates) --runs \(runs)\(json ? " --json" : "")")
        let proposal = directory + "/proposed.yaml"
        var rows: [String] = []
        for (name, arguments) in [("propose", ["propose", "--db", database, "--out", proposal]),
                                  ("review", ["review", proposal, "--db", database] + (json ? ["--json"] : []))] {
            var seconds: [Double] = [], memory: [Double] = []
            for _ in 0..<runs {
                let start = monotonic()
                let child = try Child([cordon] + arguments, output: directory + "/\(name).out")
                guard let status = child.wait(timeout: 300), status == 0 || (name == "review" && status == 3) else {
                    throw ValidationError("\(name) failed")
                }
                seconds.append(monotonic() - start)
                memory.append(Double(child.peakRSS ?? 0) / 1_048_576)
                unlink(directory + "/\(name).out")
            }
            rows.append("| `cordon \(name)\(name == "review" && json ? " --json" : "")` | \(aggregates) | \(format(median(seconds) * 1000, 0)) | \(format(seconds.max()! * 1000, 0)) | \(format(median(memory), 1)) |")
        }
        say("| command | aggregates | median ms | max ms | peak RSS MiB |")
        say("|---|---|---|---|---|")
        rows.forEach(say)
    }

    /// A week-like mix: the standard services to a few servers, many clients on a few inbound
    /// ports, and a long tail of outbound destinations.
    private func fill(_ path: String) throws {
        let store = try FlowStore(path: path)
        var aggregator = FlowAggregator(remoteCap: 1_000_000)
        let host = IPAddress("192.0.2.10")!
        var random: UInt64 = 7
        let ports: [(Direction, UInt8, UInt16)] = [(.inbound, 6, 22), (.outbound, 17, 53), (.outbound, 17, 123), (.outbound, 6, 389),
                                                   (.inbound, 6, 443), (.outbound, 6, 443), (.outbound, 6, 80), (.inbound, 17, 514)]
        for n in 0..<aggregates {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let (direction, transport, port) = ports[n % ports.count]
            let remote = IPAddress(ipv4: 0xC633_0000 | UInt32(truncatingIfNeeded: random >> 40) & 0xFFFF)  // 198.51.x.y
            aggregator.record(FlowKey(direction: direction, transport: transport, local: host, remote: IPPrefix(remote),
                                      service: port &+ UInt16(n / 8 % 50)), at: 1_795_000_000 + Int64(n))
        }
        try store.write(aggregator.takeChanges())
    }
}
