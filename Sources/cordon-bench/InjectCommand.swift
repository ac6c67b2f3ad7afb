import ArgumentParser
internal import CConntrack
#if canImport(Glibc)
import Glibc
#endif

/// The second load generator of `ingest` (`--source netlink`): creates conntrack entries directly
/// through ctnetlink, in the namespace it runs in, instead of sending packets.
///
/// Each entry is the one-way UDP flow a packet would have made, with a 1 s timeout, and raises the
/// same NEW event (and DESTROY when it expires). Without the packet path (raw socket, routing,
/// veth, softirq) the kernel makes entries several times faster, which is what it takes on this
/// 2-CPU machine to offer listeners more than ~90k new flows/s. 64 create requests go per `send`;
/// none asks for an ACK.
struct InjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inject", abstract: "Internal: ctnetlink entry generator for ingest.",
                                                    shouldDisplay: false)

    @OptionGroup var load: LoadOptions

    func run() throws {
        let fd = socket(AF_NETLINK, rawSocket, NETLINK_NETFILTER)
        guard fd >= 0 else { throw ValidationError("netlink socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 8 << 20
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)

        let batch = 64, slot = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: batch * slot, alignment: 8)
        defer { buffer.deallocate() }
        guard let ct = nfct_new() else { throw ValidationError("nfct_new failed") }
        defer { nfct_destroy(ct) }
        nfct_set_attr_u8(ct, ATTR_L3PROTO, UInt8(AF_INET))
        nfct_set_attr_u8(ct, ATTR_L4PROTO, UInt8(IPPROTO_UDP))
        nfct_set_attr_u32(ct, ATTR_IPV4_DST, load.destinationAddress.s_addr)
        nfct_set_attr_u32(ct, ATTR_TIMEOUT, load.timeout)

        try load.pace(batch: batch) { first in
            var length = 0
            for n in first..<first + batch {
                let (host, sourcePort, destinationPort) = load.flow(n)
                nfct_set_attr_u32(ct, ATTR_IPV4_SRC, (UInt32(0xCB00_7100) | UInt32(host)).bigEndian)  // 203.0.113.host
                nfct_set_attr_u16(ct, ATTR_PORT_SRC, sourcePort.bigEndian)
                nfct_set_attr_u16(ct, ATTR_PORT_DST, destinationPort.bigEndian)
                nfct_setobjopt(ct, UInt32(NFCT_SOPT_SETUP_REPLY))
                let header = (buffer + length).assumingMemoryBound(to: nlmsghdr.self)
                header.pointee = nlmsghdr(nlmsg_len: UInt32(MemoryLayout<nlmsghdr>.size + MemoryLayout<nfgenmsg>.size),
                                          nlmsg_type: UInt16(NFNL_SUBSYS_CTNETLINK << 8 | Int32(IPCTNL_MSG_CT_NEW.rawValue)),
                                          nlmsg_flags: UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL),
                                          nlmsg_seq: UInt32(truncatingIfNeeded: n), nlmsg_pid: 0)
                (buffer + length + MemoryLayout<nlmsghdr>.size).assumingMemoryBound(to: nfgenmsg.self).pointee =
                    nfgenmsg(nfgen_family: UInt8(AF_INET), version: UInt8(NFNETLINK_V0), res_id: 0)
                nfct_nlmsg_build(header, ct)
                length += (Int(header.pointee.nlmsg_len) + 3) & ~3
            }
            let written = withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer, length, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                }
            }
            return written == length ? batch : 0
        }
    }
}
