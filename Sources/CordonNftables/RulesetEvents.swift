#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonNetlink
import SystemPackage

/// nf_tables change notifications (NFNLGRP_NFTABLES): every committed transaction in the
/// namespace ends with a new-generation message naming the process that committed it, which is
/// how the guard tells another program's change from its own agent's.
public final class RulesetEvents: Sendable {
    private let socket: NetlinkSocket

    public init() throws {
        do {
            socket = try NetlinkSocket(family: NETLINK_NETFILTER, groups: 1 << (UInt32(NFNLGRP_NFTABLES.rawValue) - 1))
            try socket.setReceiveBuffer(4 << 20)
        } catch {
            throw NftablesError.system(operation: "subscribe to nf_tables notifications", errno: error.rawValue)
        }
    }

    /// Waits up to `timeout` seconds; returns the committing process ids of the generations
    /// announced (0 when unknown). An overrun (ENOBUFS) reports one unknown committer: the
    /// caller must assume a change.
    public func next(timeout: Double) -> [UInt32] {
        guard (try? socket.waitReadable(milliseconds: Int32(timeout * 1000)))?.readable == true else { return [] }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        return buffer.withUnsafeMutableBytes { raw -> [UInt32] in
            let received: Int
            do { received = try socket.receive(into: raw, wait: false) } catch {
                return (error as? Errno) == .noBufferSpace ? [0] : []
            }
            var pids: [UInt32] = []
            NetlinkMessages.forEach(in: UnsafeMutableRawBufferPointer(rebasing: raw[..<received])) { message in
                guard message.type == UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_NEWGEN.rawValue) else { return }
                pids.append(CNftnl_generationPid(message.start.assumingMemoryBound(to: nlmsghdr.self)))
            }
            return pids
        }
    }
}
