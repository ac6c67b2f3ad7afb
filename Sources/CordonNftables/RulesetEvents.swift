#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl

/// nf_tables change notifications (NFNLGRP_NFTABLES): every committed transaction in the
/// namespace ends with a new-generation message naming the process that committed it, which is
/// how the guard tells another program's change from its own agent's.
public final class RulesetEvents: @unchecked Sendable {
    private let socket: OpaquePointer

    public init() throws {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else {
            throw NftablesError.system(operation: "open netlink socket", errno: errno)
        }
        guard mnl_socket_bind(socket, 1 << (UInt32(NFNLGRP_NFTABLES.rawValue) - 1), pid_t(bitPattern: UInt32(MNL_SOCKET_AUTOPID))) == 0 else {
            let code = errno
            mnl_socket_close(socket)
            throw NftablesError.system(operation: "subscribe to nf_tables notifications", errno: code)
        }
        var size: Int32 = 4 << 20
        setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        self.socket = socket
    }

    deinit { mnl_socket_close(socket) }

    /// Waits up to `timeout` seconds; returns the committing process ids of the generations
    /// announced (0 when unknown). An overrun (ENOBUFS) reports one unknown committer: the
    /// caller must assume a change.
    public func next(timeout: Double) -> [UInt32] {
        var poller = pollfd(fd: mnl_socket_get_fd(socket), events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let received = recv(mnl_socket_get_fd(socket), &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if received < 0 { return errno == ENOBUFS ? [0] : [] }
        var pids: [UInt32] = []
        buffer.withUnsafeMutableBytes { raw in
            var remaining = Int32(received)
            var header = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            while mnl_nlmsg_ok(header, remaining) {
                if header.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_NEWGEN.rawValue) {
                    pids.append(CNftnl_generationPid(header))
                }
                header = mnl_nlmsg_next(header, &remaining)
            }
        }
        return pids
    }
}
