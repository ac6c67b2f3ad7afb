import ArgumentParser
import CordonCore
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `cordon render` of one network with many entries and many services: the table must grow
/// with entries + services, not entries × services (what `enforce` builds is the same table).
struct RenderBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "render",
                                                    abstract: "Time and memory of `cordon render` for entries × services (no root needed).")

    @Option(help: "Entry counts, comma-separated.") var entries: String = "5000,20000,100000"
    @Option(help: "Services of the network.") var services: Int = 64
    @Option(help: "Runs per size.") var runs: Int = 3

    func run() throws {
        let sizes = entries.split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty, sizes.allSatisfy({ (1...100_000).contains($0) }), (1...64).contains(services), (1...20).contains(runs) else {
            throw ValidationError("out of range")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        say("# cordon-bench render --entries \(entries) --services \(services) --runs \(runs)")
        let directory = NSTemporaryDirectory() + "cordon-render-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        say("| entries × services | elements in the table | `cordon render` median s | max s | peak RSS MiB |")
        say("|---|---|---|---|---|")
        for size in sizes {
            let ports: [Service] = (0..<services).map { index -> Service in
                let port = UInt16(1000 + 7 * index)
                return .ports(transport: IPProtocolNumber.tcp, range: port...port)
            }
            let ruleset = Ruleset(name: "render-\(size)", networks: [ExternalNetwork(name: "wide", entries: SyntheticRuleset.fillers(size, below: size),
                                                                                      services: ports)],
                                  incoming: [], outgoing: [Rule(network: "wide")])
            let file = directory + "/render-\(size).yaml"
            try RulesetText.render(ruleset).write(toFile: file, atomically: true, encoding: .utf8)
            let elements = CordonTables.enforcement(ruleset: ruleset, management: ManagementChannel()).sets.reduce(0) { $0 + $1.elements.count }
            var seconds: [Double] = []
            var peak = 0
            for _ in 0..<runs {
                let started = monotonic()
                var usage = rusage()
                let child = try Child([cordon, "render", "--ruleset", file, "--db", directory + "/none.db"], output: "/dev/null", errors: "/dev/null")
                guard child.wait(timeout: 600) == 0 else { throw ValidationError("cordon render failed at \(size)") }
                seconds.append(monotonic() - started)
                getrusage(RUSAGE_CHILDREN.rawValue, &usage)
                peak = max(peak, usage.ru_maxrss * 1024)
            }
            say("| \(size) × \(services) | \(elements) | \(format(median(seconds), 2)) | \(format(seconds.max()!, 2)) | \(format(Double(peak) / 1_048_576, 0)) |")
        }
    }
}
