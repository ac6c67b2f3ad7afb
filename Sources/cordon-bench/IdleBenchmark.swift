import ArgumentParser
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What an agent costs a host that does nothing: discovery, the metrics endpoint on and scraped
/// as Prometheus would, for `--minutes`. Side by side, in the same namespace and for the same
/// time, `conntrack -E` (what a user would run to watch connections) is measured the same way.
struct IdleBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "idle",
                                                    abstract: "CPU and memory of an idle agent in discovery with metrics on (needs root).")

    @Option(help: "Minutes to watch.") var minutes: Double = 10
    @Option(help: "Seconds between scrapes of the metrics endpoint (Prometheus' default is 15).") var scrapeInterval: Double = 15
    @Option(help: "New connections per second through the host meanwhile (0: none).") var connectionsPerSecond: Double = 0

    /// utime + stime of a process, in seconds.
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command name: state is field 3, utime 14, stime 15 (1-based over the whole line).
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func statusField(_ pid: pid_t, _ name: String) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
        return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { Double($0) }
    }

    func run() throws {
        guard minutes > 0, minutes <= 120, scrapeInterval >= 1, connectionsPerSecond >= 0, connectionsPerSecond <= 100 else {
            throw ValidationError("out of range")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        say("# cordon-bench idle --minutes \(format(minutes, 1)) --scrape-interval \(format(scrapeInterval, 0)) --connections-per-second \(format(connectionsPerSecond, 1))")
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), peer = try lab.namespace("peer")
        try lab.connect(host, ["192.0.2.10/24"], peer, ["192.0.2.20/24"])
        _ = try lab.spawn(peer, ["socat", "TCP-LISTEN:443,fork,reuseaddr", "EXEC:/bin/true"])
        let database = lab.directory + "/cordon.db", socket = lab.directory + "/cordon.sock"
        let agent = try lab.startAgent(in: host, binary: cordon, arguments: ["--db", database, "--socket", socket, "--metrics", "127.0.0.1:9464"],
                                       socket: socket, log: lab.directory + "/agent.log")
        let watcher = try lab.spawn(host, ["conntrack", "-E", "-o", "timestamp"], log: "/dev/null")
        // Settled: the start's dump and first flush are not what an idle host pays.
        sleep(5)
        let processes = [("cordon agent", agent.pid), ("conntrack -E", watcher.pid)]
        let startCPU = processes.map { Self.cpuSeconds($0.1) ?? .nan }
        let startRSS = processes.map { Self.statusField($0.1, "VmRSS") ?? .nan }
        let started = monotonic()
        var minuteCPU: [[Double]] = processes.map { _ in [] }
        var lastMinute = startCPU
        var nextScrape = started, nextConnection = started, nextMinute = started + 60
        var scrapes = 0, failedScrapes = 0, connections = 0
        while monotonic() - started < minutes * 60 {
            let now = monotonic()
            if now >= nextScrape {
                let scraped = try lab.run(host, ["curl", "-sf", "--max-time", "5", "http://127.0.0.1:9464/metrics"])
                if scraped.succeeded && scraped.stdout.contains("cordon_conntrack_events_total") { scrapes += 1 } else { failedScrapes += 1 }
                nextScrape += scrapeInterval
            }
            if connectionsPerSecond > 0, now >= nextConnection {
                _ = try? lab.run(host, ["socat", "-u", "/dev/null", "TCP:192.0.2.20:443,connect-timeout=1"], timeout: 5)
                connections += 1
                nextConnection += 1 / connectionsPerSecond
            }
            if now >= nextMinute {
                for (index, process) in processes.enumerated() {
                    let cpu = Self.cpuSeconds(process.1) ?? .nan
                    minuteCPU[index].append((cpu - lastMinute[index]) / 60 * 100)
                    lastMinute[index] = cpu
                }
                nextMinute += 60
            }
            usleep(100_000)
        }
        let elapsed = monotonic() - started
        say("# \(scrapes) scrapes (\(failedScrapes) failed), \(connections) connections, \(format(elapsed, 0)) s")
        say("| process | CPU over the run, % of a core | per-minute median % | per-minute max % | RSS at start MiB | RSS at end MiB | peak RSS MiB | threads |")
        say("|---|---|---|---|---|---|---|---|")
        for (index, process) in processes.enumerated() {
            let cpu = ((Self.cpuSeconds(process.1) ?? .nan) - startCPU[index]) / elapsed * 100
            let rss = (Self.statusField(process.1, "VmRSS") ?? .nan) / 1024
            let peak = (Self.statusField(process.1, "VmHWM") ?? .nan) / 1024
            let threads = Self.statusField(process.1, "Threads") ?? .nan
            say("| \(process.0) | \(format(cpu, 3)) | \(format(median(minuteCPU[index]), 3)) | \(format(minuteCPU[index].max() ?? .nan, 3)) | "
                + "\(format(startRSS[index] / 1024, 1)) | \(format(rss, 1)) | \(format(peak, 1)) | \(format(threads, 0)) |")
        }
        lab.stop(watcher)
        lab.stop(agent)
    }
}
