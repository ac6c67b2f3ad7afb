#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore

/// Reads one table's kernel handle and flags. A handle names one incarnation of a table: the
/// isolation state records it, and the agent's start asks whether an overlay is there at all.
enum TableQuery {
    /// nil when no `inet` table has that name.
    static func handle(of name: String) throws -> UInt64? { try query(name)?.handle }

    /// The table's handle and flags (dormant: its chains see no packets), nil when absent.
    static func query(_ name: String) throws -> (handle: UInt64, flags: UInt32)? {
        var found: (UInt64, UInt32)?
        try NetlinkDump.run(NFT_MSG_GETTABLE, flags: NLM_F_ACK, build: { header in
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            nftnl_table_set_str(table, UInt16(NFTNL_TABLE_NAME.rawValue), name)
            nftnl_table_nlmsg_build_payload(header, table)
        }) { header in
            guard header.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_NEWTABLE.rawValue) else { return }
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            if nftnl_table_nlmsg_parse(header, table) == 0 {
                found = (nftnl_table_get_u64(table, UInt16(NFTNL_TABLE_HANDLE.rawValue)),
                         nftnl_table_get_u32(table, UInt16(NFTNL_TABLE_FLAGS.rawValue)))
            }
        }
        return found
    }
}

extension TableQuery {
    /// Every set of a table, as libnftnl parsed it (valid only inside `each`).
    static func forEachSet(table: String, _ each: (OpaquePointer) -> Void) throws {
        try NetlinkDump.run(NFT_MSG_GETSET, build: { header in
            let set = nftnl_set_alloc()!
            defer { nftnl_set_free(set) }
            nftnl_set_set_str(set, UInt16(NFTNL_SET_TABLE.rawValue), table)
            nftnl_set_nlmsg_build_payload(header, set)
        }) { header in
            let set = nftnl_set_alloc()!
            defer { nftnl_set_free(set) }
            guard nftnl_set_nlmsg_parse(header, set) == 0 else { return }
            each(set)
        }
    }

    /// Every element of one set, as libnftnl parsed it (valid only inside `each`).
    static func forEachElement(table: String, set name: String, _ each: (OpaquePointer) -> Void) throws {
        try NetlinkDump.run(NFT_MSG_GETSETELEM, build: { header in
            let set = nftnl_set_alloc()!
            defer { nftnl_set_free(set) }
            nftnl_set_set_str(set, UInt16(NFTNL_SET_TABLE.rawValue), table)
            nftnl_set_set_str(set, UInt16(NFTNL_SET_NAME.rawValue), name)
            nftnl_set_elems_nlmsg_build_payload(header, set)
        }) { header in
            let set = nftnl_set_alloc()!
            defer { nftnl_set_free(set) }
            guard nftnl_set_elems_nlmsg_parse(header, set) == 0, let iterator = nftnl_set_elems_iter_create(set) else { return }
            defer { nftnl_set_elems_iter_destroy(iterator) }
            var element = nftnl_set_elems_iter_cur(iterator)
            while let current = element {
                each(current)
                element = nftnl_set_elems_iter_next(iterator)
            }
        }
    }
}

extension NftablesBackend {
    public func handle(of table: String) throws -> UInt64? { try TableQuery.handle(of: table) }

    /// The namespace's ruleset generation: every committed transaction adds one (zero is skipped).
    public func generation() throws -> UInt32 {
        var found: UInt32?
        try NetlinkDump.run(NFT_MSG_GETGEN, flags: NLM_F_ACK, build: { _ in }) { header in
            guard header.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_NEWGEN.rawValue) else { return }
            let gen = nftnl_gen_alloc()!
            defer { nftnl_gen_free(gen) }
            if nftnl_gen_nlmsg_parse(header, gen) == 0 { found = nftnl_gen_get_u32(gen, UInt16(NFTNL_GEN_ID)) }
        }
        guard let found else { throw NftablesError.system(operation: "read the ruleset generation", errno: ENOENT) }
        return found
    }

    /// The generation one commit after `generation`.
    static func generation(after generation: UInt32) -> UInt32 { generation &+ 1 == 0 ? 1 : generation &+ 1 }
}

extension NftablesBackend {
    /// The elements of a table's name sets with the milliseconds each has left: what a restart
    /// carries over so that addresses learned just before it (not yet in the database) stay allowed.
    public func nameSetElements(table: String) throws -> [String: [(key: [UInt8], expiresIn: UInt64)]] {
        var names: [String] = []
        try TableQuery.forEachSet(table: table) { set in
            let name = String(cString: nftnl_set_get_str(set, UInt16(NFTNL_SET_NAME.rawValue)))
            if CordonTables.isNameSet(name) { names.append(name) }
        }
        var result: [String: [(key: [UInt8], expiresIn: UInt64)]] = [:]
        for name in names {
            try TableQuery.forEachElement(table: table, set: name) { current in
                var length: UInt32 = 0
                // libnftnl's get_u64 reads whatever is there: ask first.
                if nftnl_set_elem_is_set(current, UInt16(NFTNL_SET_ELEM_EXPIRATION)),
                   let data = nftnl_set_elem_get(current, UInt16(NFTNL_SET_ELEM_KEY), &length) {
                    let key = Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
                    result[name, default: []].append((key, nftnl_set_elem_get_u64(current, UInt16(NFTNL_SET_ELEM_EXPIRATION))))
                }
            }
        }
        return result
    }
}
