import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// What the two load generators (`generate`, `inject`) share: where the flows go, which sources
/// they come from, and the pace.
///
/// Flow n comes from 203.0.113.<host> port 1024-65535 and goes to the destination's port
/// `port + n % ports`; with all 254 hosts that is 16 million distinct tuples before one repeats.
/// Parallel generators take disjoint host ranges.
struct LoadOptions: ParsableArguments {
    @Option var destination: String
    @Option var port: UInt16 = 5001
    @Option(help: "Destination ports port..<port+ports, to spread flows over more aggregation keys.")
    var ports: Int = 1
    @Option var firstHost: Int = 1
    @Option var lastHost: Int = 254
    @Option var rate: Double
    @Option var duration: Double
    @Option var maxFlows: Int = 50_000_000
    @Option(help: "Seconds an injected entry lives (inject only).")
    var timeout: UInt32 = 1

    func validate() throws {
        guard 1 <= firstHost, firstHost <= lastHost, lastHost <= 254 else { throw ValidationError("hosts must be within 1...254") }
        guard ports >= 1, Int(port) + ports <= 65_536 else { throw ValidationError("ports out of range") }
        guard rate > 0, duration > 0 else { throw ValidationError("rate and duration must be positive") }
        var address = in_addr()
        guard inet_pton(AF_INET, destination, &address) == 1 else { throw ValidationError("bad --destination") }
    }

    /// The destination in network byte order.
    var destinationAddress: in_addr {
        var address = in_addr()
        _ = inet_pton(AF_INET, destination, &address)
        return address
    }

    /// Source host octet, source port and destination port of flow `n`.
    func flow(_ n: Int) -> (host: UInt8, sourcePort: UInt16, destinationPort: UInt16) {
        let hosts = lastHost - firstHost + 1
        return (UInt8(firstHost + n % hosts), UInt16(1024 + (n / hosts) % 64_512), UInt16(Int(port) + n % ports))
    }

    /// Calls `send(first)` for batches of `batch` flows, starting at flow `first`, at the target
    /// rate until `rate × duration` flows (or the time limit, 1.5 × duration); `send` returns how
    /// many of its batch went out. Prints the line `ingest` reads: "sent N failed F seconds S rate R".
    func pace(batch: Int, _ send: (Int) throws -> Int) throws {
        let limit = min(maxFlows, Int(rate * duration))
        var next = 0, sent = 0
        let start = monotonic()
        while next + batch <= limit {
            let elapsed = monotonic() - start
            if elapsed > duration * 1.5 { break }
            if next + batch > Int(rate * elapsed) + batch {
                usleep(100)
                continue
            }
            sent += try send(next)
            next += batch
        }
        let elapsed = monotonic() - start
        print("sent \(sent) failed \(next - sent) seconds \(format(elapsed, 3)) rate \(format(Double(sent) / elapsed, 0))")
    }
}
