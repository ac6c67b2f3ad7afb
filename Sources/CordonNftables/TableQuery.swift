#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore

/// Reads one table's kernel handle. A handle names one incarnation of a table: deleting by the
/// handle recorded when Cordon created it never deletes a table of the same name that someone
/// else (or a restore) created since.
enum TableQuery {
    /// nil when no `inet` table has that name.
    static func handle(of name: String) throws -> UInt64? {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else {
            throw NftablesError.system(operation: "open netlink socket", errno: errno)
        }
        defer { mnl_socket_close(socket) }
        guard mnl_socket_bind(socket, 0, pid_t(bitPattern: UInt32(MNL_SOCKET_AUTOPID))) == 0 else {
            throw NftablesError.system(operation: "bind netlink socket", errno: errno)
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let sequence = UInt32(truncatingIfNeeded: time(nil))
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            let header = nftnl_nlmsg_build_hdr(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt16(NFT_MSG_GETTABLE.rawValue),
                                               UInt16(NFPROTO_INET), UInt16(NLM_F_ACK), sequence)!
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            nftnl_table_set_str(table, UInt16(NFTNL_TABLE_NAME.rawValue), name)
            nftnl_table_nlmsg_build_payload(header, table)
            return Int(header.pointee.nlmsg_len)
        }
        guard mnl_socket_sendto(socket, buffer, length) == length else {
            throw NftablesError.system(operation: "send table query", errno: errno)
        }
        var handle: UInt64?
        while true {
            let received = mnl_socket_recvfrom(socket, &buffer, buffer.count)
            if received < 0 {
                if errno == EINTR { continue }
                throw NftablesError.system(operation: "receive table query", errno: errno)
            }
            var finished = false
            var failure: Int32 = 0
            buffer.withUnsafeMutableBytes { raw in
                var remaining = Int32(received)
                var header = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
                while mnl_nlmsg_ok(header, remaining) {
                    if header.pointee.nlmsg_type == UInt16(NLMSG_ERROR) {
                        var seq: UInt32 = 0
                        failure = -CNftnl_errorCode(header, &seq)
                        finished = true
                    } else if header.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_NEWTABLE.rawValue) {
                        let table = nftnl_table_alloc()!
                        if nftnl_table_nlmsg_parse(header, table) == 0 {
                            handle = nftnl_table_get_u64(table, UInt16(NFTNL_TABLE_HANDLE.rawValue))
                        }
                        nftnl_table_free(table)
                    }
                    header = mnl_nlmsg_next(header, &remaining)
                }
            }
            if finished {
                if failure == ENOENT { return nil }
                if failure != 0 { throw NftablesError.system(operation: "query table \(name)", errno: failure) }
                return handle
            }
        }
    }
}

extension NftablesBackend {
    public func handle(of table: String) throws -> UInt64? { try TableQuery.handle(of: table) }

    /// Deletes exactly the incarnation with this handle; ENOENT when it is gone.
    public func remove(table name: String, handle: UInt64) throws {
        let batch = NetlinkBatch()
        batch.add(NFT_MSG_DELTABLE, flags: 0, label: "delete table inet \(name) handle \(handle)") { header in
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            nftnl_table_set_u32(table, UInt16(NFTNL_TABLE_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_table_set_u64(table, UInt16(NFTNL_TABLE_HANDLE.rawValue), handle)
            nftnl_table_nlmsg_build_payload(header, table)
        }
        try installedChange(name) { try batch.commit(on: connection) }
    }
}
