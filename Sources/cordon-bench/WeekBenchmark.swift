import ArgumentParser
import CordonAgent
import CordonConntrack
import CordonCore
import CordonStore
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A simulated week of discovery without the kernel: connection events go through the agent's own
/// recorder (classification, dedup by conntrack id, aggregation, roll-up) and are flushed to a
/// SQLite file as the agent would, every `flush-every` events of simulated time.
struct WeekBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "week",
                                                    abstract: "Simulated week: database size, peak RSS, intake rate.")

    @Option(help: "Connection events (each a NEW and a DESTROY).") var events: Int = 100_000_000
    @Option(help: "Distinct flow keys the ordinary traffic spreads over.") var keys: Int = 10_000
    @Option(help: "Distinct remote addresses of a scan mixed in.") var scan: Int = 1_000_000
    @Option(help: "Flush after this many events (the agent flushes every 2 s; 10^5 events is about 10 min of a week).") var flushEvery: Int = 100_000
    @Option(help: "Runs (medians reported).") var runs: Int = 1

    func run() throws {
        guard events > 0, keys > 0, scan >= 0, flushEvery > 0, runs > 0 else { throw ValidationError("all counts must be positive") }
        say("# cordon-bench week --events \(events) --keys \(keys) --scan \(scan) --flush-every \(flushEvery) --runs \(runs)")
        var seconds: [Double] = [], sizes: [Double] = [], rows: [Double] = []
        for run in 1...runs {
            let (elapsed, size, count) = try simulate()
            seconds.append(elapsed); sizes.append(Double(size)); rows.append(Double(count))
            say("#   run \(run): \(format(elapsed, 1)) s, \(format(Double(events) / elapsed / 1e6, 2)) M events/s, database \(format(Double(size) / 1_048_576, 2)) MiB, \(count) rows")
        }
        let rss = ProcessSample.peakRSS(getpid())
        say("| events | keys | scan remotes | median wall s | median M events/s | database MiB | rows | peak RSS MiB |")
        say("|---|---|---|---|---|---|---|---|")
        say("| \(events) | \(keys) | \(scan) | \(format(median(seconds), 1)) | \(format(Double(events) / median(seconds) / 1e6, 2)) "
            + "| \(format(median(sizes) / 1_048_576, 2)) | \(format(median(rows), 0)) | \(format(Double(rss) / 1_048_576, 1)) |")
    }

    /// Returns wall seconds, database bytes (with WAL checkpointed) and stored rows.
    private func simulate() throws -> (Double, Int, Int) {
        let path = NSTemporaryDirectory() + "cordon-week-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).db"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        let host4 = IPAddress("192.0.2.10")!, host6 = IPAddress("2001:db8::10")!
        let local = LocalAddresses(unicast: [host4, host6])
        // The ordinary traffic: a fixed population of keys, a fifth inbound, some IPv6 and ICMP.
        var population: [ConnectionTuple] = []
        population.reserveCapacity(keys)
        for i in 0..<keys {
            let v6 = i % 10 == 0
            let remote = v6 ? IPAddress(family: .ipv6, high: 0x2001_0db8_0000_0001, low: UInt64(i))
                            : IPAddress(ipv4: 0xC633_6400 &+ UInt32(i % 250) &+ UInt32(i / 250) << 8)  // 198.51.x.y
            let me = v6 ? host6 : host4
            let transport: UInt8 = i % 50 == 0 ? (v6 ? 58 : 1) : (i % 3 == 0 ? 17 : 6)
            let port = UInt16(1 + i % 1000)
            population.append(i % 5 == 0
                ? ConnectionTuple(transport: transport, source: remote, destination: me, sourcePort: 40_000, destinationPort: port,
                                  icmpType: 8)
                : ConnectionTuple(transport: transport, source: me, destination: remote, sourcePort: 40_000, destinationPort: port,
                                  icmpType: 8))
        }
        let week: Int64 = 7 * 86_400, start: Int64 = 1_795_000_000
        let scanEvery = scan > 0 ? max(1, events / scan) : Int.max
        let store = try FlowStore(path: path)
        let recorder = FlowRecorder(aggregator: FlowAggregator())
        recorder.setLocalAddresses(local)
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        var scanned = 0
        let began = monotonic()
        for n in 0..<events {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let now = start + Int64(n) * week / Int64(events)
            var tuple: ConnectionTuple
            if n % scanEvery == 0 && scanned < scan {
                // One SYN from a new address somewhere in IPv4 to the SSH port.
                tuple = ConnectionTuple(transport: 6, source: IPAddress(ipv4: UInt32(truncatingIfNeeded: random >> 32)),
                                        destination: host4, sourcePort: 40_000, destinationPort: 22)
                scanned += 1
            } else {
                tuple = population[Int(random >> 33) % keys]
            }
            let id = UInt32(truncatingIfNeeded: n)
            recorder.handle(ConntrackEntry(kind: .new, id: id, tuple: tuple, packets: 0, bytes: 0), at: now)
            recorder.handle(ConntrackEntry(kind: .destroy, id: id, tuple: tuple, packets: 6, bytes: 900), at: now)
            if n % flushEvery == flushEvery - 1 { try store.write(recorder.takeChanges()) }
        }
        try store.write(recorder.takeChanges())
        let elapsed = monotonic() - began
        let rows = try store.flowCount()
        try store.checkpoint()
        var info = stat()
        stat(path, &info)
        return (elapsed, Int(info.st_size), rows)
    }
}
