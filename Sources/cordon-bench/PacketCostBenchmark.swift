import ArgumentParser
import CordonCore
import CordonLab
import CordonNftables
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What enforcement costs per packet, with a large ruleset, a small one, and none (the discovery
/// table): the rate of new flows the host accepts at saturation, or (`--rate`) the host CPU time
/// per packet at a fixed offered rate, which keeps the conntrack table below its limit.
///
/// `gen` sends 46-byte UDP packets to `host`, each from a new source tuple, so each is a new
/// conntrack entry and goes through every rule up to the set lookup that accepts it (an
/// established flow would be accepted by the second rule and say nothing about the sets). The
/// host's receive processing is steered to a CPU of its own (RPS), away from the generator's, so
/// that the host, not the generator, is what saturates: its accepted rate is then the inverse of
/// its cost per packet. Packets are counted after Cordon's input chain, by a counter in a table of
/// the benchmark's at a later priority.
struct PacketCostBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "packet-cost",
                                                    abstract: "New-flow rate through an enforced host: large vs small ruleset vs none (needs root).")

    @Option(help: "Entries of the incoming network, one enforcement case each (comma-separated); a case without a ruleset always runs.")
    var entries: String = "10,10000,100000"

    @Option(help: "Runs per case (medians reported); the cases take turns within each run.")
    var runs: Int = 5

    @Option(help: "Seconds counted per run, after the warm-up.")
    var duration: Double = 5

    @Option(help: "Seconds of load before counting starts.")
    var warmup: Double = 1

    @Option(help: "New flows per second offered; 0: as many as the generator can make, to saturate the host.")
    var rate: Double = 0

    @Option(help: "CPU of the generator (and of this process).")
    var generatorCPU: Int = 0

    @Option(help: "CPU that does the host namespace's receive processing (RPS).")
    var hostCPU: Int = 1

    static let port: UInt16 = 5001
    static let source = IPPrefix("203.0.113.0/24")!

    func run() throws {
        let counts = entries.split(separator: ",").compactMap { Int($0) }
        guard counts.allSatisfy({ (2...RulesetLimits.entriesPerNetwork).contains($0) }) else {
            throw ValidationError("--entries: comma-separated counts of 2 to \(RulesetLimits.entriesPerNetwork)")
        }
        guard (1...50).contains(runs), duration >= 1, duration <= 60, warmup >= 0, warmup <= 10, rate >= 0, rate <= 10_000_000 else {
            throw ValidationError("--runs 1-50, --duration 1-60 s, --warmup 0-10 s, --rate 0-10000000")
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        guard (0..<cpus).contains(generatorCPU), (0..<cpus).contains(hostCPU), generatorCPU != hostCPU else {
            throw ValidationError("--generator-cpu and --host-cpu: two different CPUs of 0-\(cpus - 1)")
        }
        let bench = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]).path
        let machine = MachineDescription.current()
        say("# cordon-bench packet-cost --entries \(entries) --runs \(runs) --duration \(format(duration, 0)) --warmup \(format(warmup, 0)) --rate \(format(rate, 0)) "
            + "--generator-cpu \(generatorCPU) --host-cpu \(hostCPU)")
        say("# \(machine.text); generator on CPU \(generatorCPU), host receive processing on CPU \(hostCPU)")

        // This process and what it starts (the counter reads) stay off the host's CPU.
        let pin = try Child(["taskset", "-a", "-p", "-c", String(generatorCPU), String(getpid())])
        guard pin.wait(timeout: 10) == 0 else { throw ValidationError("taskset of this process failed") }

        var cases: [Case] = [Case(name: "no ruleset (discovery)", entries: 0, table: CordonTables.discovery())]
        for count in counts {
            let ruleset = SyntheticRuleset.incoming(entries: count, source: Self.source, service: .ports(transport: IPProtocolNumber.udp,
                                                                                                          range: Self.port...Self.port))
            let table = CordonTables.enforcement(ruleset: ruleset, management: SyntheticRuleset.management)
            let large = SyntheticRuleset.elements(of: table, set: SyntheticRuleset.largeSet.incoming, transport: IPProtocolNumber.udp, port: Self.port)
            let set = table.set(named: SyntheticRuleset.largeSet.incoming)!
            let position = set.elements.firstIndex { $0.spans[0].low == Self.source.span.low } ?? -1
            guard large == count, position >= 0 else {
                throw ValidationError("the \(count) entries rendered to \(large) elements, the source's at \(position)")
            }
            say("# \(count) entries: set \(SyntheticRuleset.largeSet.incoming) holds \(large) elements for udp/\(Self.port) (one per entry, none merged); "
                + "the generator's \(Self.source) is element \(position + 1) of \(set.elements.count)")
            cases.append(Case(name: "\(count) entries", entries: count, table: table))
        }

        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host"), gen = try lab.namespace("gen")
        let (hostLink, _) = try lab.connect(host, ["192.0.2.10/24"], gen, ["192.0.2.1/24"])
        try lab.run(host, ["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1"])
        try lab.run(host, ["sh", "-c", "echo \(String(1 << hostCPU, radix: 16)) > /sys/class/net/\(hostLink)/queues/rx-0/rps_cpus"])
        // One-way UDP entries expire after a second (plus the garbage collector's delay) instead of 30.
        try lab.run(host, ["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=1"])
        let counter = try lab.run(host, ["nft", "-f", "-"], input: """
            table inet benchcount {
            \tchain input {
            \t\ttype filter hook input priority 100; policy accept;
            \t\tudp dport \(Self.port) counter
            \t}
            }

            """)
        guard counter.succeeded else { throw ValidationError("benchcount table: \(counter.stderr)") }
        let conntrackMax = try lab.run(host, ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        say("# conntrack: udp timeout 1 s in the host namespace, table limit \(conntrackMax) (the machine's, not settable per namespace)")

        var results = Array(repeating: [Sample](), count: cases.count)
        for run in 0..<runs {
            for step in 0..<cases.count {
                let index = (step + run) % cases.count
                // Other programs on the host's CPU would take its time from the packets: such a
                // run is measured again (up to twice), and marked if it still was disturbed.
                var sample = try measure(cases[index], lab: lab, host: host, gen: gen, hostLink: hostLink, bench: bench)
                for _ in 0..<2 where sample.disturbed {
                    say("#   run \(run + 1), \(cases[index].name): other programs used \(format(sample.other * 100, 1)) % of CPU \(hostCPU); again")
                    sleep(5)
                    sample = try measure(cases[index], lab: lab, host: host, gen: gen, hostLink: hostLink, bench: bench)
                }
                results[index].append(sample)
                say("#   run \(run + 1), \(cases[index].name): \(sample.detail)")
            }
        }

        func ratio(_ values: [Double], _ index: Int?) -> [String] {
            values.map { value in index.map { format(value / values[$0], 3) } ?? "-" }
        }
        let rates = results.map { median($0.map(\.rate)) }
        let costs = results.map { median($0.map(\.nanosecondsPerPacket)) }
        let small = cases.firstIndex { $0.entries == 10 }
        let rateVsSmall = ratio(rates, small), rateVsNone = ratio(rates, 0)
        let costVsSmall = ratio(costs, small), costVsNone = ratio(costs, 0)
        say("| case | accepted new flows/s (min-max) | host CPU ns/packet (min-max) | host CPU busy % | flows/s ÷ 10 entries | flows/s ÷ no ruleset "
            + "| ns/packet ÷ 10 entries | ns/packet ÷ no ruleset | Cordon drops | conntrack drops | early drops | backlog drops |")
        say("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (index, item) in cases.enumerated() {
            let samples = results[index]
            func spread(_ values: [Double]) -> String {
                "\(format(median(values), 0)) (\(format(values.min() ?? .nan, 0))-\(format(values.max() ?? .nan, 0)))"
            }
            func total(_ value: (Sample) -> Int) -> Int { samples.reduce(0) { $0 + value($1) } }
            say("| \(item.name) | \(spread(samples.map(\.rate))) | \(spread(samples.map(\.nanosecondsPerPacket))) "
                + "| \(format(median(samples.map(\.busy)) * 100, 1)) | \(rateVsSmall[index]) | \(rateVsNone[index]) "
                + "| \(costVsSmall[index]) | \(costVsNone[index]) | \(total(\.cordonDrops)) | \(total(\.conntrackDrops)) "
                + "| \(total(\.earlyDrops)) | \(total(\.backlogDrops)) |")
        }
        say("# drops: totals over the runs' counted windows (conntrack's over the whole load)")
    }

    struct Case {
        var name: String
        var entries: Int
        var table: FirewallTable
    }

    struct Sample {
        var seconds: Double
        var accepted: Int
        var received: Int
        var backlogDrops: Int
        var cordonDrops: Int
        var conntrackDrops: Int
        var earlyDrops: Int
        var conntrackEntries: Int
        /// Host CPU seconds in the window: busy (neither idle nor stolen by the hypervisor), and
        /// softirq as sampled at the tick (which misses much of it: shown, not used).
        var busySeconds: Double
        var softirqSeconds: Double
        /// User time of programs on the host's CPU (the packet path has none).
        var otherSeconds: Double

        var rate: Double { Double(accepted) / seconds }
        var busy: Double { busySeconds / seconds }
        var softirq: Double { softirqSeconds / seconds }
        var other: Double { otherSeconds / seconds }
        var disturbed: Bool { other > 0.02 }
        /// Idle time is accounted exactly (tickless idle); the split of busy time only at ticks,
        /// which a tickless CPU does not take while it wakes briefly for a few packets. So the cost
        /// is all busy time of the host's CPU: the packets' processing and the wake-ups it needs.
        var nanosecondsPerPacket: Double { accepted == 0 ? .nan : busySeconds / Double(accepted) * 1e9 }
        var detail: String {
            "accepted \(format(rate, 0))/s (\(accepted) in \(format(seconds, 2)) s), received \(received), backlog drops \(backlogDrops), "
                + "Cordon drops \(cordonDrops), conntrack drops \(conntrackDrops) early drops \(earlyDrops) (\(conntrackEntries) entries at the end), "
                + "host CPU busy \(format(busy * 100, 1)) % (softirq ticks \(format(softirq * 100, 1)) %), \(format(nanosecondsPerPacket, 0)) ns/packet"
                + (disturbed ? ", DISTURBED: other programs used \(format(other * 100, 1)) % of the host CPU" : "")
        }
    }

    private func measure(_ item: Case, lab: Lab, host: String, gen: String, hostLink: String, bench: String) throws -> Sample {
        let table = item.table
        try lab.inNamespace(host) { try NftablesBackend().replace(table) }
        // Start from an empty conntrack table, so that no case inherits another's entries.
        try lab.run(host, ["conntrack", "-F"], timeout: 60)
        usleep(200_000)
        let conntrackBefore = try conntrackStatistics(lab, host)

        let generator = try lab.spawn(gen, ["taskset", "-c", String(generatorCPU), bench, "generate", "--destination", "192.0.2.10",
                                            "--port", String(Self.port), "--rate", String(rate > 0 ? rate : 10_000_000), "--duration", String(warmup + duration + 10)])
        defer { lab.stop(generator, signal: SIGKILL) }
        usleep(UInt32(warmup * 1_000_000))
        guard generator.isRunning else { throw ValidationError("the generator stopped early") }

        let before = try readCounters(lab, host: host, hostLink: hostLink, enforced: item.entries > 0)
        usleep(UInt32(max(0, duration - (monotonic() - before.time)) * 1_000_000))
        let after = try readCounters(lab, host: host, hostLink: hostLink, enforced: item.entries > 0)
        let seconds = after.time - before.time
        lab.stop(generator, signal: SIGKILL)
        let entries = Int(try lab.run(host, ["conntrack", "-C"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let conntrackAfter = try conntrackStatistics(lab, host)

        return Sample(seconds: seconds, accepted: after.accepted - before.accepted, received: after.received - before.received,
                      backlogDrops: after.backlogDrops - before.backlogDrops, cordonDrops: after.cordonDrops - before.cordonDrops,
                      conntrackDrops: conntrackAfter.drops - conntrackBefore.drops, earlyDrops: conntrackAfter.earlyDrops - conntrackBefore.earlyDrops,
                      conntrackEntries: entries,
                      busySeconds: seconds - (after.idle - before.idle) - (after.steal - before.steal),
                      softirqSeconds: after.softirq - before.softirq, otherSeconds: after.user - before.user)
    }

    struct Counters {
        var accepted = 0, received = 0, backlogDrops = 0, cordonDrops = 0
        var idle = 0.0, steal = 0.0, softirq = 0.0, user = 0.0
        /// When the CPU times and the accepted count were read (a few ms apart).
        var time = 0.0
    }

    private func readCounters(_ lab: Lab, host: String, hostLink: String, enforced: Bool) throws -> Counters {
        var counters = Counters()
        // What the rate and the cost are computed from, read back to back; the checks after.
        counters.backlogDrops = try backlogDrops(hostCPU)
        (counters.user, counters.steal, counters.softirq) = try tickTimes(hostCPU)
        counters.idle = try idleSeconds(hostCPU)
        counters.time = monotonic()
        counters.accepted = try firstCounter(lab.run(host, ["nft", "list", "table", "inet", "benchcount"]).stdout)
        let link = try lab.run(host, ["cat", "/sys/class/net/\(hostLink)/statistics/rx_packets"]).stdout
        counters.received = Int(link.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        if enforced {
            // The input chain's only counter is on its final drop.
            counters.cordonDrops = try firstCounter(lab.run(host, ["nft", "list", "chain", "inet", CordonTables.baseName, "input"]).stdout)
        }
        return counters
    }

    /// `counter packets N bytes M`: the first N of a listing.
    private func firstCounter(_ listing: String) throws -> Int {
        guard let range = listing.range(of: "counter packets ") else { throw ValidationError("no counter in:\n\(listing)") }
        return Int(listing[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    /// User (with nice), stolen and softirq seconds of one CPU since boot, from /proc/stat (user
    /// nice system idle iowait irq softirq steal ...): all accounted at the tick.
    private func tickTimes(_ cpu: Int) throws -> (user: Double, steal: Double, softirq: Double) {
        let fields = try procStat(cpu)
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ((fields[0] + fields[1]) / ticks, fields[7] / ticks, fields[6] / ticks)
    }

    private func procStat(_ cpu: Int) throws -> [Double] {
        let stat = try String(contentsOfFile: "/proc/stat", encoding: .utf8)
        guard let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu\(cpu) ") }) else {
            throw ValidationError("no cpu\(cpu) in /proc/stat")
        }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { throw ValidationError("short /proc/stat line: \(line)") }
        return fields
    }

    /// Seconds one CPU has been idle since boot: idle + iowait from /proc/stat, which a tickless
    /// kernel accounts exactly, stopping the clock while an interrupt (and the softirq work after
    /// it) runs. (cpuidle's state residencies would not do: a halted CPU handles the interrupt
    /// inside the state.)
    private func idleSeconds(_ cpu: Int) throws -> Double {
        let fields = try procStat(cpu)
        return (fields[3] + fields[4]) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Packets the CPU's input backlog refused (second column of its /proc/net/softnet_stat row).
    private func backlogDrops(_ cpu: Int) throws -> Int {
        let rows = try String(contentsOfFile: "/proc/net/softnet_stat", encoding: .utf8).split(separator: "\n")
        // One row per online CPU, in order; the 13th column, when present, names the CPU.
        let row = rows.first { $0.split(separator: " ").count > 12 && Int($0.split(separator: " ")[12], radix: 16) == cpu }
            ?? (cpu < rows.count ? rows[cpu] : "")
        let columns = row.split(separator: " ")
        guard columns.count > 1 else { throw ValidationError("no softnet_stat row for CPU \(cpu)") }
        return Int(columns[1], radix: 16) ?? 0
    }

    /// Sums over CPUs of `conntrack -S`: entries refused (drop, insert_failed) and evicted to
    /// make room (early_drop).
    private func conntrackStatistics(_ lab: Lab, _ host: String) throws -> (drops: Int, earlyDrops: Int) {
        let text = try lab.run(host, ["conntrack", "-S"]).stdout
        var drops = 0, early = 0
        for field in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = field.split(separator: "=")
            guard parts.count == 2, let value = Int(parts[1]) else { continue }
            switch parts[0] {
            case "drop", "insert_failed", "chaintoolong": drops += value
            case "early_drop": early += value
            default: break
            }
        }
        return (drops, early)
    }
}
