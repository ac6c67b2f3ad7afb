import ArgumentParser
internal import CConntrack
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The second load generator of `ingest` (`--source netlink`): creates conntrack entries directly
/// through ctnetlink, in the namespace it runs in, instead of sending packets.
///
/// Each entry is a one-way UDP flow from 203.0.113.x to the host with a 1 s timeout, exactly what
/// a packet would have made, and raises the same NEW event (and DESTROY when it expires). Without
/// the packet path (raw socket, routing, veth, softirq) the kernel makes entries several times
/// faster, which is what it takes on this 2-CPU machine to offer listeners more than ~90k new
/// flows/s. Sixty-four create requests go to the kernel per `send`; none asks for an ACK.
struct InjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inject", abstract: "Internal: ctnetlink entry generator for ingest.",
                                                    shouldDisplay: false)

    @Option var destination: String
    @Option var port: UInt16 = 5001
    @Option var firstHost: Int = 1
    @Option var lastHost: Int = 254
    @Option var rate: Double
    @Option var duration: Double
    @Option var maxEntries: Int = 50_000_000

    func run() throws {
        guard 1 <= firstHost, firstHost <= lastHost, lastHost <= 254 else { throw ValidationError("hosts must be within 1...254") }
        var destinationAddress = in_addr()
        guard inet_pton(AF_INET, destination, &destinationAddress) == 1 else { throw ValidationError("bad --destination") }
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue), NETLINK_NETFILTER)
        guard fd >= 0 else { throw ValidationError("netlink socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 8 << 20
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)

        let hosts = lastHost - firstHost + 1
        let batch = 64, slot = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: batch * slot, alignment: 8)
        defer { buffer.deallocate() }
        guard let ct = nfct_new() else { throw ValidationError("nfct_new failed") }
        defer { nfct_destroy(ct) }
        nfct_set_attr_u8(ct, ATTR_L3PROTO, UInt8(AF_INET))
        nfct_set_attr_u8(ct, ATTR_L4PROTO, UInt8(IPPROTO_UDP))
        nfct_set_attr_u32(ct, ATTR_IPV4_DST, destinationAddress.s_addr)
        nfct_set_attr_u16(ct, ATTR_PORT_DST, port.bigEndian)
        nfct_set_attr_u32(ct, ATTR_TIMEOUT, 1)

        var sequence = 0, sent = 0, failed = 0
        let limit = min(maxEntries, Int(rate * duration))
        let start = monotonic()
        while sent + batch <= limit {
            let elapsed = monotonic() - start
            if elapsed > duration * 1.5 { break }
            if sent + batch > Int(rate * elapsed) + batch {
                usleep(100)
                continue
            }
            var length = 0
            for _ in 0..<batch {
                let host = firstHost + sequence % hosts
                let sourcePort = 1024 + (sequence / hosts) % 64_512
                sequence += 1
                nfct_set_attr_u32(ct, ATTR_IPV4_SRC, (UInt32(0xCB00_7100) | UInt32(host)).bigEndian)  // 203.0.113.host
                nfct_set_attr_u16(ct, ATTR_PORT_SRC, UInt16(sourcePort).bigEndian)
                nfct_setobjopt(ct, UInt32(NFCT_SOPT_SETUP_REPLY))
                let header = (buffer + length).assumingMemoryBound(to: nlmsghdr.self)
                header.pointee = nlmsghdr(nlmsg_len: UInt32(MemoryLayout<nlmsghdr>.size + 4),
                                          nlmsg_type: UInt16(NFNL_SUBSYS_CTNETLINK << 8 | Int32(IPCTNL_MSG_CT_NEW.rawValue)),
                                          nlmsg_flags: UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL),
                                          nlmsg_seq: UInt32(truncatingIfNeeded: sequence), nlmsg_pid: 0)
                let family = (buffer + length + MemoryLayout<nlmsghdr>.size).assumingMemoryBound(to: nfgenmsg.self)
                family.pointee = nfgenmsg(nfgen_family: UInt8(AF_INET), version: UInt8(NFNETLINK_V0), res_id: 0)
                nfct_nlmsg_build(header, ct)
                length += (Int(header.pointee.nlmsg_len) + 3) & ~3
            }
            let written = withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer, length, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                }
            }
            if written == length { sent += batch } else { failed += batch }
        }
        let elapsed = monotonic() - start
        print("sent \(sent) failed \(failed) seconds \(format(elapsed, 3)) rate \(format(Double(sent) / elapsed, 0))")
    }
}
