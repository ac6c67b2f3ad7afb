import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// The packet load generator of `ingest`, run by it inside the generator namespace.
///
/// Sends 46-byte IPv4/UDP packets through a raw socket, each with a tuple not used for the last
/// few million packets, so each one makes the receiving namespace create a new conntrack entry.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Internal: packet generator for ingest.",
                                                    shouldDisplay: false)

    @OptionGroup var load: LoadOptions

    func run() throws {
        let fd = socket(AF_INET, rawSocket, Int32(IPPROTO_RAW))
        guard fd >= 0 else { throw ValidationError("raw socket: \(String(cString: strerror(errno)))") }
        var sendBuffer: Int32 = 8 << 20
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))

        let size = 46
        var packet = [UInt8](repeating: 0, count: size)
        packet[0] = 0x45                     // IPv4, 20-byte header; the kernel fills length and checksum
        packet[3] = UInt8(size)
        packet[6] = 0x40                     // don't fragment
        packet[8] = 64                       // TTL
        packet[9] = UInt8(IPPROTO_UDP)
        packet[12] = 203; packet[13] = 0; packet[14] = 113
        withUnsafeBytes(of: load.destinationAddress.s_addr) { for (i, byte) in $0.enumerated() { packet[16 + i] = byte } }
        packet[25] = UInt8(size - 20)        // UDP length; checksum 0 (none) is valid for IPv4

        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_addr = load.destinationAddress
        try withUnsafePointer(to: &target) { address in
            try address.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                try load.pace(batch: 64) { first in
                    var sent = 0
                    for n in first..<first + 64 {
                        let (host, sourcePort, destinationPort) = load.flow(n)
                        packet[15] = host
                        packet[20] = UInt8(sourcePort >> 8); packet[21] = UInt8(sourcePort & 0xFF)
                        packet[22] = UInt8(destinationPort >> 8); packet[23] = UInt8(destinationPort & 0xFF)
                        // One syscall per packet: the kernel's per-packet work (routing, veth,
                        // conntrack in the receiving namespace) dominates anyway.
                        if sendto(fd, packet, size, 0, address, socklen_t(MemoryLayout<sockaddr_in>.size)) == size {
                            sent += 1
                        } else if errno != ENOBUFS && errno != EAGAIN {
                            throw ValidationError("sendto: \(String(cString: strerror(errno)))")
                        }
                    }
                    return sent
                }
            }
        }
    }
}
