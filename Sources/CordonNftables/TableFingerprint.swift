#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import CordonNetlink
import SystemPackage
import Synchronization

/// What a table holds in the kernel, reduced to one digest: its chains (hook, priority, policy),
/// every rule's expressions (handles, positions and counter values left out: they change without
/// anyone changing the rules), and every set with its elements (the elements of sets that
/// expire by design count by their keys; those of the name sets, filled from DNS answers, not at all). Two fingerprints differ when anything that
/// decides a packet's fate differs.
public struct TableFingerprint: Hashable, Sendable {
    public let digest: String
    /// One line per chain, rule and set, for the log when something changed.
    public let lines: [String]
}

/// What the agent expects of one of its tables: the guard's reference.
public enum InstalledTable: Sendable, Equatable {
    /// The agent removed it.
    case absent
    /// The agent installed it and read it back before anything else changed nf_tables.
    case present(TableFingerprint)
    /// The agent installed it, but another transaction came between its commit and the read-back:
    /// what the kernel held then is nobody's reference. The guard re-installs it.
    case unverified
}

/// The tables this backend installed last, for the guard to compare the kernel against. Kept
/// only when asked for (the agent): reading a table back costs a dump.
public final class InstalledTables: Sendable {
    private struct State {
        var tables: [String: InstalledTable] = [:]
        /// Changes of ours in flight, and a count of all of them: a check that overlaps one is void.
        var busy = 0
        var generation: UInt64 = 0
        var onUnverified: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())
    public init() {}
    public var snapshot: [String: InstalledTable] { state.withLock { $0.tables } }
    /// nil while a change of ours runs; otherwise a token that `unchanged(since:)` checks.
    public var quiet: UInt64? { state.withLock { $0.busy == 0 ? $0.generation : nil } }
    public func unchanged(since token: UInt64) -> Bool { state.withLock { $0.busy == 0 && $0.generation == token } }
    /// Called (outside the lock) whenever an install could not be verified: the guard's wake-up.
    public func onUnverified(_ body: @escaping @Sendable () -> Void) { state.withLock { $0.onUnverified = body } }
    func begin() { state.withLock { $0.busy += 1; $0.generation += 1 } }
    func end() { state.withLock { $0.busy -= 1; $0.generation += 1 } }
    func set(_ name: String, _ table: InstalledTable) {
        let wake = state.withLock { state -> (@Sendable () -> Void)? in
            state.tables[name] = table
            return table == .unverified ? state.onUnverified : nil
        }
        wake?()
    }
}

extension NftablesBackend {
    /// nil when no `inet` table has that name.
    public func fingerprint(of table: String) throws -> TableFingerprint? {
        guard let found = try TableQuery.query(table) else { return nil }
        // A dormant table is still there, but none of its chains sees a packet.
        var lines: [String] = ["table flags \(found.flags)"]
        try NetlinkDump.run(NFT_MSG_GETCHAIN, build: { header in
            let chain = nftnl_chain_alloc()!
            defer { nftnl_chain_free(chain) }
            nftnl_chain_set_str(chain, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
            nftnl_chain_nlmsg_build_payload(header, chain)
        }) { header in
            let chain = nftnl_chain_alloc()!
            defer { nftnl_chain_free(chain) }
            guard nftnl_chain_nlmsg_parse(header, chain) == 0,
                  String(cString: nftnl_chain_get_str(chain, UInt16(NFTNL_CHAIN_TABLE.rawValue))) == table else { return }
            var line = "chain " + String(cString: nftnl_chain_get_str(chain, UInt16(NFTNL_CHAIN_NAME.rawValue)))
            if nftnl_chain_is_set(chain, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue)) {
                line += " hook \(nftnl_chain_get_u32(chain, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue)))"
                line += " priority \(nftnl_chain_get_s32(chain, UInt16(NFTNL_CHAIN_PRIO.rawValue)))"
                line += " policy \(nftnl_chain_get_u32(chain, UInt16(NFTNL_CHAIN_POLICY.rawValue)))"
            }
            lines.append(line)
        }
        try NetlinkDump.run(NFT_MSG_GETRULE, build: { header in
            let rule = nftnl_rule_alloc()!
            defer { nftnl_rule_free(rule) }
            nftnl_rule_set_str(rule, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_nlmsg_build_payload(header, rule)
        }) { header in
            let rule = nftnl_rule_alloc()!
            defer { nftnl_rule_free(rule) }
            guard nftnl_rule_nlmsg_parse(header, rule) == 0,
                  String(cString: nftnl_rule_get_str(rule, UInt16(NFTNL_RULE_TABLE.rawValue))) == table else { return }
            let chain = String(cString: nftnl_rule_get_str(rule, UInt16(NFTNL_RULE_CHAIN.rawValue)))
            nftnl_rule_unset(rule, UInt16(NFTNL_RULE_HANDLE.rawValue))
            nftnl_rule_unset(rule, UInt16(NFTNL_RULE_POSITION.rawValue))
            if let iterator = nftnl_expr_iter_create(rule) {
                while let expression = nftnl_expr_iter_next(iterator) {
                    if String(cString: nftnl_expr_get_str(expression, UInt16(NFTNL_EXPR_NAME))) == "counter" {
                        nftnl_expr_set_u64(expression, UInt16(NFTNL_EXPR_CTR_PACKETS), 0)
                        nftnl_expr_set_u64(expression, UInt16(NFTNL_EXPR_CTR_BYTES), 0)
                    }
                }
                nftnl_expr_iter_destroy(iterator)
            }
            // The rule's own netlink encoding, less what changes by itself, is its identity.
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let length: Int = buffer.withUnsafeMutableBytes { raw in
                let out = nftnl_nlmsg_build_hdr(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt16(NFT_MSG_NEWRULE.rawValue),
                                                UInt16(NFPROTO_INET), 0, 0)!
                nftnl_rule_nlmsg_build_payload(out, rule)
                return Int(out.pointee.nlmsg_len)
            }
            lines.append("rule \(chain) " + ContentDigest.hex(bytes: Array(buffer[16..<length])).prefix(32))
        }
        var sets: [(name: String, flags: UInt32)] = []
        try TableQuery.forEachSet(table: table) { set in
            sets.append((String(cString: nftnl_set_get_str(set, UInt16(NFTNL_SET_NAME.rawValue))),
                         nftnl_set_get_u32(set, UInt16(NFTNL_SET_FLAGS.rawValue))))
            lines.append("set \(sets.last!.name) key type \(nftnl_set_get_u32(set, UInt16(NFTNL_SET_KEY_TYPE.rawValue))) length "
                         + "\(nftnl_set_get_u32(set, UInt16(NFTNL_SET_KEY_LEN.rawValue)))")
        }
        for (name, flags) in sets.sorted(by: { $0.name < $1.name }) {
            // The addresses of DNS answers come and go by design: their sets count by themselves.
            if CordonTables.isNameSet(name) {
                lines.append("set \(name) flags \(flags) dynamic")
                continue
            }
            // Expiring elements (the confirmation switch) count by their keys, not by the time
            // they have left: flushing them early is tampering, their clock running is not.
            var keys: [[UInt8]] = []
            try TableQuery.forEachElement(table: table, set: name) { current in
                var key: [UInt8] = []
                for attribute in [NFTNL_SET_ELEM_KEY, NFTNL_SET_ELEM_KEY_END, NFTNL_SET_ELEM_FLAGS, NFTNL_SET_ELEM_DATA,
                                  NFTNL_SET_ELEM_VERDICT] {
                    var length: UInt32 = 0
                    if let data = nftnl_set_elem_get(current, UInt16(attribute), &length) {
                        key += UnsafeRawBufferPointer(start: data, count: Int(length))
                    }
                }
                keys.append(key)
            }
            let sorted = keys.sorted { $0.lexicographicallyPrecedes($1) }
            lines.append("set \(name) flags \(flags) elements \(keys.count) " + ContentDigest.hex(bytes: sorted.flatMap { $0 }).prefix(32))
        }
        return TableFingerprint(digest: ContentDigest.hex(lines.joined(separator: "\n")), lines: lines)
    }
}

/// A netlink request: one message, answered by many, up to NLMSG_DONE (a dump) or the
/// acknowledgement (a single get). "No such object" ends it without an error.
enum NetlinkDump {
    static func run(_ type: nf_tables_msg_types, flags: Int32 = NLM_F_DUMP, build: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                    each: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        let socket = try NetlinkConnection.open()
        var request = [UInt8](repeating: 0, count: 1 << 16)
        let length: Int = request.withUnsafeMutableBytes { raw in
            let header = nftnl_nlmsg_build_hdr(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt16(type.rawValue),
                                               UInt16(NFPROTO_INET), UInt16(flags), 1)!
            build(header)
            return Int(header.pointee.nlmsg_len)
        }
        do {
            try socket.setReceiveTimeout(seconds: 5)
            let sent = try request.withUnsafeBytes { try socket.send(UnsafeRawBufferPointer(rebasing: $0[..<length])) }
            guard sent == length else { throw NftablesError.system(operation: "send dump request", errno: EMSGSIZE) }
        } catch let error as Errno {
            throw NftablesError.system(operation: "send dump request", errno: error.rawValue)
        }
        var large = [UInt8](repeating: 0, count: 1 << 20)
        var done = false
        while !done {
            var failure: Int32 = 0
            try large.withUnsafeMutableBytes { raw in
                let received: Int
                do { received = try socket.receive(into: raw) } catch let error as Errno {
                    throw NftablesError.system(operation: "receive dump", errno: error.rawValue)
                }
                NetlinkMessages.forEach(in: UnsafeMutableRawBufferPointer(rebasing: raw[..<received])) { message in
                    let header = message.start.assumingMemoryBound(to: nlmsghdr.self)
                    switch message.type {
                    case NetlinkMessage.done: done = true
                    case NetlinkMessage.error:
                        var seq: UInt32 = 0
                        failure = -CNftnl_errorCode(header, &seq)
                        done = true
                    default: each(header)
                    }
                }
            }
            if failure != 0 && failure != ENOENT { throw NftablesError.system(operation: "dump", errno: failure) }
        }
    }
}
