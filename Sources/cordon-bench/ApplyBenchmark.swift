import ArgumentParser
import CordonCore
import CordonLab
import CordonNftables
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// How long it takes to apply an enforcement table with a large network, side by side with
/// `nft -f` of the same table rendered as text, in the same namespace and the same run.
///
/// Both sides do what production does: replace Cordon's table while the previous one (with the
/// same content) is present, by deleting and re-creating it in one transaction. The order of the
/// two alternates from run to run, so that neither always follows the other's deferred clean-up
/// of the table it replaced.
struct ApplyBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apply",
                                                    abstract: "Apply latency: NftablesBackend vs nft -f of the same table (needs root).")

    @Option(help: "CIDR entries of the large outgoing network, comma-separated (one lab per value).")
    var entries: String = "10,1000,10000,100000"

    @Option(help: "Runs per entry count (medians reported).")
    var runs: Int = 5

    @Flag(help: "Print the results as one JSON document (progress goes to stderr).")
    var json = false

    func run() throws {
        let counts = entries.split(separator: ",").compactMap { Int($0) }
        guard !counts.isEmpty, counts.allSatisfy({ (1...RulesetLimits.entriesPerNetwork).contains($0) }) else {
            throw ValidationError("--entries: comma-separated counts of 1 to \(RulesetLimits.entriesPerNetwork)")
        }
        guard (1...100).contains(runs) else { throw ValidationError("--runs: 1 to 100") }
        guard let nft = Lab.which("nft") else { throw ValidationError("`nft` not found: apt-get install -y nftables") }
        let machine = MachineDescription.current()
        let toStderr = json
        let note: (String) -> Void = { text in
            if toStderr { FileHandle.standardError.write(Data((text + "\n").utf8)) } else { say(text) }
        }
        note("# cordon-bench apply --entries \(entries) --runs \(runs)\(json ? " --json" : "")")
        note("# \(machine.text)")

        var results: [Result] = []
        for count in counts {
            let result = try measure(count, nft: nft, note: note)
            results.append(result)
        }
        if json {
            let document: [String: Any] = [
                "command": "cordon-bench apply --entries \(entries) --runs \(runs) --json",
                "machine": machine.json,
                "results": results.map(\.json),
            ]
            let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
            return
        }
        say("| entries | set elements | render ms | Cordon ms (min-max) | nft -f ms (min-max) | nft -f / Cordon | listings identical |")
        say("|---|---|---|---|---|---|---|")
        for r in results {
            say("| \(r.entries) | \(r.setElements) | \(format(median(r.render) * 1000, 2)) "
                + "| \(Self.spread(r.cordon)) | \(Self.spread(r.nft)) | \(format(median(r.nft) / median(r.cordon), 2)) "
                + "| \(r.identicalListings)/\(r.cordon.count) |")
        }
    }

    static func cpuText(_ exit: SyntheticRuleset.Exit) -> String {
        "\(format(exit.seconds * 1000, 2)) ms (CPU user \(format(exit.user * 1000, 1)) + system \(format(exit.system * 1000, 1)) ms)"
    }

    static func spread(_ seconds: [Double]) -> String {
        "\(format(median(seconds) * 1000, 1)) (\(format((seconds.min() ?? .nan) * 1000, 1))-\(format((seconds.max() ?? .nan) * 1000, 1)))"
    }

    struct Result {
        var entries: Int
        /// Elements of every set of the table (the large network's plus the small ones').
        var setElements: Int
        var render: [Double] = []
        var cordon: [Double] = []
        var nft: [Double] = []
        /// System CPU seconds: the kernel's share, spent in the applying thread.
        var cordonSystem: [Double] = []
        var nftSystem: [Double] = []
        /// Runs where both listings were the same text and held `setElements` elements.
        var identicalListings = 0

        var json: [String: Any] {
            func stats(_ values: [Double]) -> [String: Any] {
                ["median_ms": median(values) * 1000, "min_ms": (values.min() ?? .nan) * 1000, "max_ms": (values.max() ?? .nan) * 1000,
                 "runs_ms": values.map { $0 * 1000 }]
            }
            return ["entries": entries, "set_elements": setElements, "render": stats(render), "cordon": stats(cordon),
                    "nft": stats(nft), "cordon_system_cpu": stats(cordonSystem), "nft_system_cpu": stats(nftSystem),
                    "ratio_nft_to_cordon": median(nft) / median(cordon), "identical_listings": identicalListings]
        }
    }

    private func measure(_ count: Int, nft: String, note: (String) -> Void) throws -> Result {
        let ruleset = SyntheticRuleset.outgoing(entries: count)
        let management = SyntheticRuleset.management
        let table = CordonTables.enforcement(ruleset: ruleset, management: management)
        let large = SyntheticRuleset.elements(of: table, set: SyntheticRuleset.largeSet.outgoing, transport: IPProtocolNumber.tcp, port: 443)
        guard large == count else {
            throw ValidationError("the \(count) entries rendered to \(large) elements: they merged or split")
        }
        var result = Result(entries: count, setElements: table.sets.reduce(0) { $0 + $1.elements.count })
        note("# \(count) entries: set \(SyntheticRuleset.largeSet.outgoing) holds \(large) elements for tcp/443 (one per entry, none merged); "
             + "\(result.setElements) elements in all \(table.sets.count) sets")

        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host")
        try SyntheticRuleset.checkSpawnJoins(lab, host)
        // The same replace as the backend's, atomic in nft as well: the empty add makes the delete
        // valid, and nft sends the whole file as one transaction.
        let file = lab.directory + "/table.nft"
        try ("table inet \(CordonTables.baseName) {}\ndelete table inet \(CordonTables.baseName)\n" + table.nftText)
            .write(toFile: file, atomically: true, encoding: .utf8)
        let errors = lab.directory + "/nft.err"

        // One backend for all runs, as the agent has: its netlink socket stays open, so a replace
        // returns when the kernel acknowledged the new rules, not after the kernel finished
        // freeing the old ones (which closing a socket waits for). Untimed: the first table in
        // a fresh namespace, so that every timed apply is a replace.
        let backend = NftablesBackend()
        try lab.inNamespace(host) { try backend.replace(table) }

        for run in 0..<runs {
            let start = monotonic()
            _ = CordonTables.enforcement(ruleset: ruleset, management: management)
            result.render.append(monotonic() - start)

            var listings: [String: String] = [:]
            var cpu: [String: SyntheticRuleset.Exit] = [:]
            for side in run % 2 == 0 ? ["cordon", "nft"] : ["nft", "cordon"] {
                // The kernel frees a replaced table's memory after an RCU grace period, in the
                // background: each apply starts once the previous one's clean-up has had time.
                usleep(200_000)
                if side == "cordon" {
                    let exit = try lab.inNamespace(host) {
                        let times = SyntheticRuleset.threadTimes()
                        let start = monotonic()
                        try backend.replace(table)
                        let elapsed = monotonic() - start
                        let after = SyntheticRuleset.threadTimes()
                        return SyntheticRuleset.Exit(status: 0, seconds: elapsed, user: after.user - times.user, system: after.system - times.system)
                    }
                    result.cordon.append(exit.seconds)
                    result.cordonSystem.append(exit.system)
                    cpu["cordon"] = exit
                } else {
                    let exit = try lab.inNamespace(host) { try SyntheticRuleset.timedRun([nft, "-f", file], errors: errors) }
                    guard exit.status == 0 else {
                        throw ValidationError("nft -f failed (\(exit.status)): \((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
                    }
                    result.nft.append(exit.seconds)
                    result.nftSystem.append(exit.system)
                    cpu["nft"] = exit
                }
                let listing = try lab.run(host, ["nft", "list", "table", "inet", CordonTables.baseName], timeout: 120)
                guard listing.succeeded else { throw ValidationError("nft list table failed: \(listing.stderr)") }
                listings[side] = listing.stdout
            }
            let cordonCount = SyntheticRuleset.listedElements(listings["cordon"]!)
            let nftCount = SyntheticRuleset.listedElements(listings["nft"]!)
            guard cordonCount == result.setElements, nftCount == result.setElements else {
                throw ValidationError("listed elements after the backend \(cordonCount), after nft -f \(nftCount), expected \(result.setElements)")
            }
            if listings["cordon"] == listings["nft"] { result.identicalListings += 1 }
            note("#   run \(run + 1) (\(run % 2 == 0 ? "Cordon first" : "nft first")): render \(format(result.render.last! * 1000, 2)) ms, "
                 + "Cordon \(Self.cpuText(cpu["cordon"]!)), nft -f \(Self.cpuText(cpu["nft"]!)), "
                 + "listed \(cordonCount) / \(nftCount) elements, same listing: \(listings["cordon"] == listings["nft"])")
        }
        return result
    }
}

/// The rulesets both kernel benchmarks install: one large network among a few small, realistic
/// ones, and a small management channel.
enum SyntheticRuleset {
    static let management = ManagementChannel(
        collectors: [ManagementChannel.Endpoint(transport: IPProtocolNumber.tcp, addresses: IPPrefix("192.0.2.20")!, port: 9000)],
        resolvers: [IPAddress("192.0.2.53")!])

    /// Administrators' ssh in, DNS out: what a host's ruleset holds besides its large network.
    static let small: (networks: [ExternalNetwork], incoming: [Rule], outgoing: [Rule]) = (
        [ExternalNetwork(name: "admins", entries: [IPPrefix("198.51.100.0/28")!, IPPrefix("2001:db8:ad::/48")!],
                         services: [Service("tcp/22")!]),
         ExternalNetwork(name: "dns", entries: [IPPrefix("192.0.2.53")!, IPPrefix("192.0.2.54")!], services: [Service("udp/53")!, Service("tcp/53")!])],
        [Rule(network: "admins")],
        [Rule(network: "dns")])

    /// `count` /24 networks two apart (every 512 addresses), so that no two merge into a wider
    /// prefix: `below` of them upwards from 10.0.0.0, the rest upwards from 204.0.0.0. All /24,
    /// like the generator's 203.0.113.0/24: one exact set holds them all.
    static func fillers(_ count: Int, below: Int) -> [IPPrefix] {
        (0..<count).map { index in
            let base: UInt32 = index < below ? 0x0A00_0000 + UInt32(index) * 512 : 0xCC00_0000 + UInt32(index - below) * 512
            return IPPrefix(IPAddress(ipv4: base), length: 24)
        }
    }

    /// Where the large network's elements go: the exact set of /24 prefixes.
    static let largeSet = (incoming: "allow_in_v4_p24", outgoing: "allow_out_v4_p24")

    /// A ruleset whose network `large` of `entries` CIDRs is allowed out on tcp/443.
    static func outgoing(entries: Int) -> Ruleset {
        let large = ExternalNetwork(name: "large", entries: fillers(entries, below: entries), services: [Service("tcp/443")!])
        return Ruleset(name: "apply-\(entries)", networks: [large] + small.networks,
                       incoming: small.incoming, outgoing: [Rule(network: "large")] + small.outgoing)
    }

    /// A ruleset whose network `large` of `entries` CIDRs may reach `service` on this host;
    /// `source` is one of them, in the middle of the sorted list.
    static func incoming(entries: Int, source: IPPrefix, service: Service) -> Ruleset {
        let entryList = fillers(entries - 1, below: (entries - 1) / 2) + [source]
        let large = ExternalNetwork(name: "large", entries: entryList, services: [service])
        return Ruleset(name: "packet-cost-\(entries)", networks: [large] + small.networks,
                       incoming: [Rule(network: "large")] + small.incoming, outgoing: small.outgoing)
    }

    /// Elements of `set` for exactly `transport`/`port`: the large network's share of it.
    static func elements(of table: FirewallTable, set name: String, transport: UInt8, port: UInt16) -> Int {
        guard let set = table.set(named: name) else { return 0 }
        return set.elements.filter {
            $0.spans[1] == FirewallSet.Span(UInt128(transport)) && $0.spans[2] == FirewallSet.Span(UInt128(port))
        }.count
    }

    /// Elements in an `nft list` output: elements are comma-separated inside `elements = { }`,
    /// and none contains a comma or a brace.
    static func listedElements(_ listing: String) -> Int {
        var total = 0
        var rest = listing[...]
        while let open = rest.range(of: "elements = {") {
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else { break }
            total += rest[open.upperBound..<close].filter { $0 == "," }.count + 1
            rest = rest[rest.index(after: close)...]
        }
        return total
    }

    /// A program's exit: status, seconds from spawn to reaped exit, and its CPU time.
    struct Exit {
        var status: Int32
        var seconds: Double
        var user: Double
        var system: Double
    }

    /// Runs a program to exit from the calling thread, so that it starts in the network namespace
    /// that thread joined (a child inherits its creating thread's namespaces).
    ///
    /// Polls every 50 µs rather than `Child.wait`'s millisecond: small applies take a few ms.
    static func timedRun(_ arguments: [String], errors: String, timeout: Double = 300) throws -> Exit {
        let start = monotonic()
        let child = try Child(arguments, errors: errors)
        var raw: Int32 = 0
        var usage = rusage()
        while true {
            let reaped = wait4(child.pid, &raw, WNOHANG, &usage)
            if reaped == child.pid { break }
            if reaped < 0 && errno != EINTR { throw ValidationError("wait4: \(String(cString: strerror(errno)))") }
            if monotonic() - start > timeout {
                kill(child.pid, SIGKILL)
                _ = waitpid(child.pid, &raw, 0)
                throw ValidationError("timed out after \(timeout) s: \(arguments.joined(separator: " "))")
            }
            usleep(50)
        }
        let elapsed = monotonic() - start
        return Exit(status: (raw & 0x7F) == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F), seconds: elapsed,
                    user: seconds(usage.ru_utime), system: seconds(usage.ru_stime))
    }

    static func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }

    /// User and system CPU seconds of the calling thread. The kernel applies a netlink batch in
    /// the sending thread's system call, so system time is the kernel's share of an apply.
    static func threadTimes() -> (user: Double, system: Double) {
        var usage = rusage()
        // RUSAGE_THREAD (1), a GNU extension the Glibc module does not name.
        getrusage(1, &usage)
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    /// Refuses to go on unless a program spawned from a thread joined to `namespace` really runs
    /// there: the benchmarks then run `nft -f` that way, and in the machine's own namespace it
    /// would replace a table of the machine's firewall.
    static func checkSpawnJoins(_ lab: Lab, _ namespace: String) throws {
        let output = lab.directory + "/identify.out"
        let status = try lab.inNamespace(namespace) {
            try timedRun(["sh", "-c", "ip netns identify > \(output)"], errors: "/dev/null", timeout: 10).status
        }
        let name = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, name == namespace else {
            throw ValidationError("a program spawned from the namespace thread runs in '\(name)', not in \(namespace): stopping")
        }
    }
}

/// What the figures were measured on, for the header of a benchmark's output.
struct MachineDescription {
    var cpus: Int
    var kernel: String
    var nft: String

    static func current() -> MachineDescription {
        var names = utsname()
        uname(&names)
        let kernel = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var version = "unknown"
        if let nft = Lab.which("nft"), let child = try? Child([nft, "--version"], output: NSTemporaryDirectory() + "cordon-bench-nft-version-\(getpid())") {
            let path = NSTemporaryDirectory() + "cordon-bench-nft-version-\(getpid())"
            child.wait(timeout: 10)
            version = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            unlink(path)
        }
        return MachineDescription(cpus: ProcessInfo.processInfo.activeProcessorCount, kernel: kernel, nft: version)
    }

    var text: String { "\(cpus) CPUs, Linux \(kernel), \(nft)" }
    var json: [String: Any] { ["cpus": cpus, "kernel": kernel, "nft": nft] }
}
