import ArgumentParser
import CordonCore
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What enforcing names costs DNS, and whether the hold keeps its promise.
///
/// A host, and dnsmasq serving `*.bench.example` (every name one address, so each lookup of a
/// unique name is a real answer) and `nK.rot.example` (name K → its own IPv6 address, so no
/// address is allowed before its lookup). Side by side, in each run: the same paced lookups with
/// no Cordon table in the host, then with the agent enforcing a ruleset of name entries
/// (`**.bench.example`, `**.rot.example`); then lookup-then-connect pairs, each to a new address.
/// The client is this program (`dns-client`), run inside the host namespace.
struct DNSBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dns",
                                                    abstract: "DNS latency through name enforcement, lookup-then-connect failures, hold time, agent CPU (needs root).")

    @Option(help: "Runs (each: without Cordon, then enforcing).") var runs: Int = 5
    @Option(help: "Lookups per second of unique names.") var rate: Int = 1000
    @Option(help: "Seconds of lookups per phase.") var seconds: Int = 10
    @Option(help: "Lookup-then-connect pairs (after the runs), each to a new address.") var pairs: Int = 10_000

    static let ruleset = """
        networks:
          - name: by-name
            entries: ["**.bench.example", "**.rot.example"]
            services: [tcp/443]
        outgoing:
          - to: by-name
        """

    func run() throws {
        guard (1...20).contains(runs), (1...20_000).contains(rate), (1...120).contains(seconds), (0...65_000).contains(pairs) else {
            throw ValidationError("runs 1-20, rate 1-20000, seconds 1-120, pairs 0-65000")
        }
        let cordon = try DiscoveryScenario.cordonBinary()
        let bench = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        say("# cordon-bench dns --runs \(runs) --rate \(rate) --seconds \(seconds) --pairs \(pairs)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let zone = (1...max(1, pairs)).map { "2001:db8:cafe::\(String($0, radix: 16)) n\($0).rot.example" }
        let scenario = try NameScenario(lab: lab, zone: zone, records: ["--address=/bench.example/203.0.113.7"], servers: false)
        // Its own listener: socat forks a process per connection, which on two vCPUs made
        // connections wait in the backlog (a SYN retried after a second) and the lookups slow.
        _ = try lab.spawn(scenario.net, [bench, "dns-client", "serve", "--port", "443"])
        for _ in 0..<100 where !(try lab.run(scenario.net, ["ss", "-Hltn", "sport = :443"]).stdout.contains(":443")) { usleep(50_000) }
        let file = lab.directory + "/names.yaml"
        try Self.ruleset.write(toFile: file, atomically: true, encoding: .utf8)

        func client(_ arguments: [String]) throws -> [String: Any] {
            let result = try lab.run(scenario.host, [bench, "dns-client"] + arguments, timeout: 600)
            guard result.succeeded, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
                throw LabError("dns-client failed: \(result.stdout)\(result.stderr)")
            }
            return object
        }
        func lookups(_ label: String) throws -> [String: Any] {
            try client(["latency", "--resolver", NameScenario.resolverV4, "--rate", String(rate), "--seconds", String(seconds),
                        "--suffix", "\(label).bench.example"])
        }
        func cordonCommand(_ arguments: [String]) throws -> CommandResult {
            try lab.run(scenario.host, [cordon] + arguments + ["--db", scenario.database, "--socket", scenario.socket], timeout: 60)
        }

        // Lookup-then-connect without Cordon, as the baseline of the pairs' time (not of their
        // failures: without enforcement nothing can refuse them).
        var plainPairs: [String: Any] = [:]
        if pairs > 0 {
            plainPairs = try client(["pairs", "--count", String(min(pairs, 2000)), "--suffix", "rot.example", "--port", "443"])
            say("# lookup-then-connect without Cordon: \(plainPairs["pairs"] ?? "?") pairs in \(format(plainPairs["seconds"] as? Double ?? .nan, 1)) s, "
                + "\(plainPairs["connect_failures"] ?? "?") connection failures")
        }
        var without: [(p50: Double, p99: Double)] = [], with: [(p50: Double, p99: Double)] = []
        var cpuPerThousand: [Double] = [], holdP99: [Double] = [], unanswered = 0
        for run in 1...runs {
            let plain = try lookups("plain\(run)")
            without.append((plain["p50_us"] as? Double ?? .nan, plain["p99_us"] as? Double ?? .nan))
            unanswered += plain["unanswered"] as? Int ?? 0

            let agent = try scenario.startAgent(binary: cordon)
            let approve = try lab.run(scenario.host, [cordon, "approve", file, "--operator", "bench", "--accept-risk", "--db", scenario.database])
            guard approve.succeeded else { throw LabError("approve: \(approve.stdout)\(approve.stderr)") }
            for step in [["enforce", "--operator", "bench"], ["confirm", "--operator", "bench"]] {
                let result = try cordonCommand(step)
                guard result.succeeded else { throw LabError("\(step[0]): \(result.stdout)\(result.stderr)") }
            }
            let before = ProcessSample.read(agent.pid)
            let held = try lookups("held\(run)")
            let after = ProcessSample.read(agent.pid)
            with.append((held["p50_us"] as? Double ?? .nan, held["p99_us"] as? Double ?? .nan))
            unanswered += held["unanswered"] as? Int ?? 0
            let answered = Double(held["answered"] as? Int ?? 0)
            if let before, let after, answered > 0 { cpuPerThousand.append((after.cpuSeconds - before.cpuSeconds) / answered * 1000 * 1000) }
            let status = try JSONSerialization.jsonObject(with: Data(try cordonCommand(["status", "--json"]).stdout.utf8)) as? [String: Any]
            let hold = (status?["names"] as? [String: Any])?["hold"] as? [String: Any]
            holdP99.append(Double(hold?["p99_us"] as? Int ?? -1))
            say("#   run \(run): without Cordon p50 \(format(without.last!.p50)) µs p99 \(format(without.last!.p99)) µs; "
                + "enforcing names p50 \(format(with.last!.p50)) µs p99 \(format(with.last!.p99)) µs; "
                + "hold p99 \(format(holdP99.last!)) µs; agent CPU \(format(cpuPerThousand.last ?? .nan, 1)) ms per 1000 answers")
            if run < runs { lab.stop(agent) } else if pairs > 0 {
                let result = try client(["pairs", "--count", String(pairs), "--suffix", "rot.example", "--port", "443"])
                let status = try JSONSerialization.jsonObject(with: Data(try cordonCommand(["status", "--json"]).stdout.utf8)) as? [String: Any]
                let hold = (status?["names"] as? [String: Any])?["hold"] as? [String: Any]
                let perPair = (result["seconds"] as? Double ?? .nan) / Double(pairs) * 1000
                let plainPerPair = (plainPairs["seconds"] as? Double ?? .nan) / Double(plainPairs["pairs"] as? Int ?? 1) * 1000
                say("# per pair: \(format(plainPerPair, 2)) ms without Cordon, \(format(perPair, 2)) ms enforcing names")
                say("# lookup-then-connect, \(pairs) pairs to \(pairs) new IPv6 addresses while enforcing: "
                    + "\(result["lookup_failures"] ?? "?") lookup failures, \(result["connect_failures"] ?? "?") connection failures, "
                    + "\(format(result["seconds"] as? Double ?? .nan, 1)) s; holds: ceiling reached \(hold?["ceiling_reached"] ?? "?"), "
                    + "failed updates \(hold?["failed_updates"] ?? "?"), p99 \(hold?["p99_us"] ?? "?") µs")
                lab.stop(agent)
            } else {
                lab.stop(agent)
            }
        }
        say("| lookups at \(rate)/s, unique names | p50 µs | p99 µs |")
        say("|---|---|---|")
        say("| no Cordon table | \(format(median(without.map(\.p50)))) | \(format(median(without.map(\.p99)))) |")
        say("| enforcing name entries (answers held) | \(format(median(with.map(\.p50)))) | \(format(median(with.map(\.p99)))) |")
        say("| added | \(format(median(with.map(\.p50)) - median(without.map(\.p50)))) | \(format(median(with.map(\.p99)) - median(without.map(\.p99)))) |")
        say("# medians of \(runs) runs; unanswered lookups in all: \(unanswered); hold (answer read to let go, elements acknowledged) p99 "
            + "\(format(median(holdP99))) µs; agent CPU \(format(median(cpuPerThousand), 1)) ms per 1000 answers")
    }
}

/// The client of `dns`, inside the host namespace (hidden): paced raw DNS queries timed to their
/// answers, or glibc lookups each followed at once by a connection.
struct DNSClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dns-client", abstract: "The dns benchmark's client (run by it).",
                                                    shouldDisplay: false)

    @Argument var mode: String
    @Option var resolver: String = NameScenario.resolverV4
    @Option var rate: Int = 1000
    @Option var seconds: Int = 10
    @Option var suffix: String = "bench.example"
    @Option var count: Int = 1000
    @Option var port: Int = 443

    func run() throws {
        switch mode {
        case "latency": try latency()
        case "pairs": try pairs()
        case "serve": try serve()
        default: throw ValidationError("mode: latency, pairs or serve")
        }
    }

    /// A query for `name`, type A, with `id`.
    static func query(_ name: String, id: UInt16) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") { bytes.append(UInt8(label.utf8.count)); bytes += Array(label.utf8) }
        return bytes + [0, 0, 1, 0, 1]
    }

    private func latency() throws {
        let fd = socket(AF_INET, datagramSocket, 0)
        guard fd >= 0 else { throw LabError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(53).bigEndian
        inet_pton(AF_INET, resolver, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw LabError("connect: \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let total = rate * seconds
        var sentAt = [Double](repeating: 0, count: total)
        var latencies: [Double] = []
        latencies.reserveCapacity(total)
        let start = monotonic()
        var next = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        // Bounded: every query sent on schedule, answers read until 2 s after the last.
        while monotonic() < start + Double(seconds) + 2 {
            let now = monotonic()
            while next < total, start + Double(next) / Double(rate) <= now {
                let packet = Self.query("q\(next).\(suffix)", id: UInt16(next & 0xFFFF))
                sentAt[next] = monotonic()
                _ = packet.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                next += 1
            }
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received >= 12 {
                let id = Int(buffer[0]) << 8 | Int(buffer[1])
                // Ids repeat every 65,536 queries: the latest query with that id.
                var index = id
                while index + 65_536 < next { index += 65_536 }
                if index < next, sentAt[index] > 0 {
                    latencies.append((monotonic() - sentAt[index]) * 1e6)
                    sentAt[index] = 0
                }
            }
            if next == total && latencies.count == total { break }
        }
        let sorted = latencies.sorted()
        func at(_ q: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        print("{\"answered\": \(sorted.count), \"unanswered\": \(total - sorted.count), \"p50_us\": \(at(0.5)), \"p99_us\": \(at(0.99))}")
    }

    /// Accepts and closes connections on `port` (IPv4 and IPv6) until killed; no process per connection.
    private func serve() throws {
        let fd = socket(AF_INET6, streamSocket, 0)
        guard fd >= 0 else { throw LabError("socket: \(errno)") }
        var zero: Int32 = 0, one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        guard bound == 0, listen(fd, 4096) == 0 else { throw LabError("bind/listen: \(errno)") }
        while true {
            let client = accept(fd, nil, nil)
            if client >= 0 { close(client) }
        }
    }

    private func pairs() throws {
        var lookupFailures = 0, connectFailures = 0
        let start = monotonic()
        // Bounded in count and time.
        for index in 1...count where monotonic() - start < 600 {
            var hints = addrinfo()
            hints.ai_family = AF_INET6
            hints.ai_socktype = streamSocket
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo("n\(index).\(suffix)", String(port), &hints, &result) == 0, let info = result else {
                lookupFailures += 1
                continue
            }
            defer { freeaddrinfo(info) }
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, 0)
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 { connectFailures += 1 }
            close(fd)
        }
        print("{\"pairs\": \(count), \"lookup_failures\": \(lookupFailures), \"connect_failures\": \(connectFailures), \"seconds\": \(monotonic() - start)}")
    }
}
