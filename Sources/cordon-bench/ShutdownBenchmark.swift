import ArgumentParser
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Time from SIGTERM to the agent's exit, with every aggregate it held written to the database.
///
/// The agent runs with a flush interval of an hour, so at SIGTERM everything it recorded is still
/// only in memory; the run then checks the database holds every connection the agent counted.
struct ShutdownBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "shutdown",
                                                    abstract: "SIGTERM to exit, everything flushed (needs root).")

    @Option(help: "Distinct destination ports of the generated flows (41 is coprime with the 254 sources: 10,414 keys).") var ports: Int = 41
    @Option(help: "Flows generated before SIGTERM.") var flows: Int = 100_000
    @Option(help: "Runs (median and max reported).") var runs: Int = 5

    func run() throws {
        guard ports > 0, ports <= 1000, flows > 0, flows <= 5_000_000, runs > 0 else { throw ValidationError("out of range") }
        let cordon = try DiscoveryScenario.cordonBinary()
        let bench = URL(fileURLWithPath: cordon).deletingLastPathComponent().appendingPathComponent("cordon-bench").path
        say("# cordon-bench shutdown --ports \(ports) --flows \(flows) --runs \(runs)")
        var times: [Double] = []
        var keys = 0
        for run in 1...runs {
            let (seconds, dirty, complete) = try measure(cordon: cordon, bench: bench)
            times.append(seconds)
            keys = dirty
            say("#   run \(run): \(format(seconds * 1000, 1)) ms for \(dirty) aggregates; database complete: \(complete)")
        }
        say("| aggregates in memory | runs | median ms | max ms |")
        say("|---|---|---|---|")
        say("| \(keys) | \(runs) | \(format(median(times) * 1000, 1)) | \(format((times.max() ?? 0) * 1000, 1)) |")
    }

    private func measure(cordon: String, bench: String) throws -> (Double, Int, Bool) {
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), gen = try lab.namespace("gen")
        try lab.connect(host, ["192.0.2.10/24"], gen, ["192.0.2.1/24"])
        try lab.run(host, ["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1"])
        let database = lab.directory + "/cordon.db", socket = lab.directory + "/cordon.sock"
        let agent = try lab.startAgent(in: host, binary: cordon, arguments: ["--db", database, "--socket", socket,
                                                                             "--flush-interval", "3600"],
                                       socket: socket, log: lab.directory + "/agent.log")
        try lab.run(gen, [bench, "generate", "--destination", "192.0.2.10", "--ports", String(ports),
                          "--rate", "50000", "--duration", String(Double(flows) / 50_000)], timeout: 120)
        usleep(500_000)
        let status = try lab.run(nil, [cordon, "status", "--json", "--socket", socket]).stdout
        let report = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any] ?? [:]
        let aggregates = report["flows"] as? Int ?? 0

        let start = monotonic()
        agent.signal(SIGTERM)
        while agent.isRunning && monotonic() - start < 30 { usleep(200) }
        let elapsed = monotonic() - start

        let stored = try lab.run(nil, [cordon, "flows", "--json", "--db", database]).stdout
        let rows = (try? JSONSerialization.jsonObject(with: Data(stored.utf8))) as? [[String: Any]] ?? []
        return (elapsed, aggregates, rows.count == aggregates && agent.status == 0)
    }
}
