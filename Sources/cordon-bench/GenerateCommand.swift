import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The load generator of `ingest`, run by it inside the generator namespace.
///
/// Sends 46-byte IPv4/UDP packets through a raw socket, each from a source address and port not
/// used for the last few million packets, so each one makes the receiving namespace create a new
/// conntrack entry. Paced to a target rate; bounded by a duration and a packet count.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Internal: packet generator for ingest.",
                                                    shouldDisplay: false)

    @Option var destination: String
    @Option var port: UInt16 = 5001
    /// Destination ports port..<port+ports, to spread flows over more aggregation keys.
    @Option var ports: Int = 1
    /// Sources are 203.0.113.<first-host>...<last-host> (1-254 by default), ports 1024-65535: with
    /// all hosts, 16 million distinct tuples. Parallel generators take disjoint host ranges.
    @Option var firstHost: Int = 1
    @Option var lastHost: Int = 254
    @Option var rate: Double
    @Option var duration: Double
    @Option var maxPackets: Int = 50_000_000

    func run() throws {
        guard 1 <= firstHost, firstHost <= lastHost, lastHost <= 254 else { throw ValidationError("hosts must be within 1...254") }
        let hosts = lastHost - firstHost + 1
        var destinationAddress = in_addr()
        guard inet_pton(AF_INET, destination, &destinationAddress) == 1 else { throw ValidationError("bad --destination") }
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
        guard fd >= 0 else { throw ValidationError("raw socket: \(String(cString: strerror(errno)))") }
        var sendBuffer: Int32 = 8 << 20
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))

        let batch = 64, size = 46
        var packets = [UInt8](repeating: 0, count: batch * size)
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_addr = destinationAddress
        let destinationBytes = withUnsafeBytes(of: destinationAddress.s_addr) { Array($0) }
        for i in 0..<batch {
            let p = i * size
            packets[p] = 0x45
            packets[p + 2] = 0; packets[p + 3] = UInt8(size)
            packets[p + 6] = 0x40  // don't fragment
            packets[p + 8] = 64
            packets[p + 9] = UInt8(IPPROTO_UDP)
            packets[p + 12] = 203; packets[p + 13] = 0; packets[p + 14] = 113
            for b in 0..<4 { packets[p + 16 + b] = destinationBytes[b] }
            packets[p + 22] = UInt8(port >> 8); packets[p + 23] = UInt8(port & 0xFF)
            packets[p + 24] = 0; packets[p + 25] = UInt8(size - 20)
        }

        var sequence = 0
        var sent = 0, failed = 0
        let start = monotonic()
        let limit = min(maxPackets, Int(rate * duration))
        let addressLength = socklen_t(MemoryLayout<sockaddr_in>.size)
        try packets.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!
            try withUnsafePointer(to: &target) { address in
                try address.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    while sent + batch <= limit {
                        let elapsed = monotonic() - start
                        if elapsed > duration * 1.5 { break }
                        if sent + batch > Int(rate * elapsed) + batch {
                            usleep(100)
                            continue
                        }
                        for i in 0..<batch {
                            // Source host and port 1024-65535 from one running number.
                            let host = firstHost + sequence % hosts
                            let sourcePort = 1024 + (sequence / hosts) % 64_512
                            let destinationPort = Int(port) + sequence % max(ports, 1)
                            sequence += 1
                            let p = base + i * size
                            p.storeBytes(of: UInt8(host), toByteOffset: 15, as: UInt8.self)
                            p.storeBytes(of: UInt8(sourcePort >> 8), toByteOffset: 20, as: UInt8.self)
                            p.storeBytes(of: UInt8(sourcePort & 0xFF), toByteOffset: 21, as: UInt8.self)
                            p.storeBytes(of: UInt8(destinationPort >> 8 & 0xFF), toByteOffset: 22, as: UInt8.self)
                            p.storeBytes(of: UInt8(destinationPort & 0xFF), toByteOffset: 23, as: UInt8.self)
                            // One syscall per packet: the kernel's per-packet work (routing, veth,
                            // conntrack in the receiving namespace) dominates anyway.
                            if sendto(fd, p, size, 0, address, addressLength) == size {
                                sent += 1
                            } else if errno == ENOBUFS || errno == EAGAIN {
                                failed += 1
                            } else {
                                throw ValidationError("sendto: \(String(cString: strerror(errno)))")
                            }
                        }
                    }
                }
            }
        }
        let elapsed = monotonic() - start
        print("sent \(sent) failed \(failed) seconds \(format(elapsed, 3)) rate \(format(Double(sent) / elapsed, 0))")
    }
}
