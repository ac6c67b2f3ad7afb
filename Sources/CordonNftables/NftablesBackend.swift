#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import Synchronization

/// nf_tables over netlink with libnftnl and libmnl: no `nft` binary, one batch per change.
public struct NftablesBackend: FirewallBackend {
    public let name = "nftables"
    /// Kept open for the backend's lifetime, in the network namespace of the thread that first
    /// uses it (see `NetlinkConnection`).
    let connection = NetlinkConnection()
    /// Element updates (names learned while enforcing) go on a socket of their own.
    let elementConnection = NetlinkConnection()
    /// One transaction of this backend at a time: an element update between a replace and its
    /// read-back would make the read-back unverifiable (see `installedChange`).
    let serial = TransactionLock()
    /// With it, every replace and remove records what the kernel holds afterwards (the guard's
    /// reference); nil for one-off uses (the CLI, the benchmarks).
    public let installed: InstalledTables?

    public init(recordingInstalled: Bool = false) {
        installed = recordingInstalled ? InstalledTables() : nil
    }

    /// The whole table in one transaction: the kernel switches from the old content to the new
    /// between two packets, or (refusing any message) keeps the old content untouched.
    public func replace(_ table: FirewallTable) throws { try apply([.replace(table)]) }

    public func remove(table name: String) throws { try apply([.remove(name)]) }

    /// Every change in one batch: one kernel transaction.
    public func apply(_ changes: [TableChange]) throws {
        let batch = NetlinkBatch()
        for change in changes {
            switch change {
            case .replace(let table): addReplace(table, to: batch)
            case .remove(let name): addRemove(name, to: batch)
            }
        }
        try serial.run { try installedChange(changes) { try batch.commit(on: connection) } }
    }

    /// Adds (or extends) elements of dynamic sets in one transaction, and returns when the kernel
    /// has acknowledged it: from then on a packet to those addresses matches. An element already
    /// there gets the new timeout (Linux 6.10 and later update it in place).
    /// - Parameter sets: each with only the elements to add.
    public func update(elements sets: [FirewallSet], table: String, timeoutMilliseconds: Int) throws {
        let batch = NetlinkBatch()
        for set in sets where !set.elements.isEmpty { addElements(of: set, table: table, to: batch) }
        try serial.run { try batch.commit(on: elementConnection, timeoutMilliseconds: timeoutMilliseconds) }
    }

    private func addReplace(_ table: FirewallTable, to batch: NetlinkBatch) {
        // add + delete + add: the first add makes the delete valid when the table is absent.
        // Deleting rather than flushing also drops sets and chains no longer wanted, and it is
        // much faster: flushing a large concatenated set and refilling it in one transaction
        // costs seconds, a fresh set milliseconds.
        addRemove(table.name, to: batch)
        addTable(table.name, to: batch)
        var setIDs: [String: UInt32] = [:]
        for set in table.sets {
            let id = batch.nextSetID()
            setIDs[set.name] = id
            addSet(set, id: id, table: table.name, to: batch)
        }
        // Every chain before any rule: a rule may jump to a chain listed after its own.
        for chain in table.chains { addChain(chain, table: table.name, to: batch) }
        for chain in table.chains {
            for (index, rule) in chain.rules.enumerated() {
                addRule(rule, chain: chain.name, table: table.name, index: index, setIDs: setIDs, to: batch)
            }
        }
    }

    private func addRemove(_ name: String, to batch: NetlinkBatch) {
        addTable(name, to: batch)
        batch.add(NFT_MSG_DELTABLE, flags: 0, label: "delete table inet \(name)") { header in
            Self.withTable(name) { nftnl_table_nlmsg_build_payload(header, $0) }
        }
    }

    /// Runs a change and records what each table must be after it, marking the change as ours
    /// while it runs so that the guard does not take it for tampering.
    ///
    /// The reference is read back from the kernel only when the ruleset generation proves that
    /// no other transaction came between the commit and the read (exactly one commit, ours, since
    /// the generation read before it; the same generation before and after the read-back). A
    /// flush landing in that instant would otherwise become the agent's idea of "installed".
    func installedChange(_ changes: [TableChange], _ change: () throws -> Void) throws {
        guard let installed else { return try change() }
        installed.begin()
        defer { installed.end() }
        let before = try? generation()
        do {
            try change()
        } catch {
            // The answer was lost, not refused: what the kernel holds is unknown, so the guard
            // must look (and re-install what the state requires) instead of trusting its record.
            if !((error as? any FirewallBackendError)?.changedNothing ?? false) {
                for change in changes { installed.set(change.tableName, change.isRemoval ? .absent : .unverified) }
            }
            throw error
        }
        let after = try? generation()
        var found: [String: TableFingerprint] = [:]
        var verified = before != nil && after != nil && after == Self.generation(after: before!)
        for case .replace(let table) in changes where verified {
            guard let fingerprint = try? fingerprint(of: table.name) else { verified = false; continue }
            found[table.name] = fingerprint
        }
        if verified, (try? generation()) != after { verified = false }
        for change in changes {
            switch change {
            case .remove(let name): installed.set(name, .absent)
            case .replace(let table): installed.set(table.name, verified ? .present(found[table.name]!) : .unverified)
            }
        }
    }

    private func addTable(_ name: String, to batch: NetlinkBatch) {
        batch.add(NFT_MSG_NEWTABLE, flags: NLM_F_CREATE, label: "add table inet \(name)") { header in
            Self.withTable(name) { nftnl_table_nlmsg_build_payload(header, $0) }
        }
    }

    private static func withTable(_ name: String, _ body: (OpaquePointer) -> Void) {
        let table = nftnl_table_alloc()!
        defer { nftnl_table_free(table) }
        nftnl_table_set_u32(table, UInt16(NFTNL_TABLE_FAMILY.rawValue), UInt32(NFPROTO_INET))
        nftnl_table_set_str(table, UInt16(NFTNL_TABLE_NAME.rawValue), name)
        body(table)
    }

    /// Elements per message: a netlink attribute is at most 64 KiB and the element list is one
    /// attribute, so large sets are spread over several messages of the same transaction.
    public static func elementsPerMessage(_ set: FirewallSet) -> Int {
        // Per element: the element nest, two key nests with their data attributes (key, key end).
        let perElement = 4 + 2 * (4 + 4 + set.keyLength)
        return max(1, 48 * 1024 / perElement)
    }

    private func addSet(_ set: FirewallSet, id: UInt32, table: String, to batch: NetlinkBatch) {
        func describe(_ object: OpaquePointer) {
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_set_set_str(object, UInt16(NFTNL_SET_TABLE.rawValue), table)
            nftnl_set_set_str(object, UInt16(NFTNL_SET_NAME.rawValue), set.name)
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_ID.rawValue), id)
        }
        batch.add(NFT_MSG_NEWSET, flags: NLM_F_CREATE, label: "add set inet \(table) \(set.name)") { header in
            let object = nftnl_set_alloc()!
            defer { nftnl_set_free(object) }
            describe(object)
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_KEY_TYPE.rawValue), set.keyTypeID)
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_KEY_LEN.rawValue), UInt32(set.keyLength))
            if set.isInterval {
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_FLAGS.rawValue), UInt32(NFT_SET_INTERVAL.rawValue | NFT_SET_CONCAT.rawValue))
                // Field lengths tell the kernel where one field of the key ends and the next begins;
                // without them it would treat the concatenation as one long interval.
                var lengths = [UInt8](repeating: 0, count: 16)
                for (index, field) in set.fields.enumerated() { lengths[index] = UInt8(field.length) }
                nftnl_set_set_data(object, UInt16(NFTNL_SET_DESC_CONCAT.rawValue), lengths, UInt32(lengths.count))
            } else if set.hasTimeouts {
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_FLAGS.rawValue), UInt32(NFT_SET_TIMEOUT.rawValue))
            } else {
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_FLAGS.rawValue), 0)
            }
            nftnl_set_nlmsg_build_payload(header, object)
        }
        addElements(of: set, table: table, id: id, to: batch)
    }

    private func addElements(of set: FirewallSet, table: String, id: UInt32? = nil, to batch: NetlinkBatch) {
        func describe(_ object: OpaquePointer) {
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_set_set_str(object, UInt16(NFTNL_SET_TABLE.rawValue), table)
            nftnl_set_set_str(object, UInt16(NFTNL_SET_NAME.rawValue), set.name)
            if let id { nftnl_set_set_u32(object, UInt16(NFTNL_SET_ID.rawValue), id) }
        }
        let chunk = Self.elementsPerMessage(set)
        var start = 0
        while start < set.elements.count {
            let end = min(start + chunk, set.elements.count)
            let label = "add element inet \(table) \(set.name) (elements \(start + 1)-\(end) of \(set.elements.count))"
            batch.add(NFT_MSG_NEWSETELEM, flags: NLM_F_CREATE, label: label) { [start] header in
                let object = nftnl_set_alloc()!
                defer { nftnl_set_free(object) }
                describe(object)
                for element in set.elements[start..<end] {
                    let item = nftnl_set_elem_alloc()!
                    var low = set.keyBytes(element, high: false), high = set.keyBytes(element, high: true)
                    nftnl_set_elem_set(item, UInt16(NFTNL_SET_ELEM_KEY), &low, UInt32(low.count))
                    if set.isInterval {
                        nftnl_set_elem_set(item, UInt16(NFTNL_SET_ELEM_KEY_END), &high, UInt32(high.count))
                    }
                    if let timeout = element.timeout ?? set.elementTimeout {
                        nftnl_set_elem_set_u64(item, UInt16(NFTNL_SET_ELEM_TIMEOUT), UInt64(timeout) * 1000)
                    }
                    nftnl_set_elem_add(object, item)
                }
                nftnl_set_elems_nlmsg_build_payload(header, object)
            }
            start = end
        }
    }

    private func addChain(_ chain: FirewallChain, table: String, to batch: NetlinkBatch) {
        batch.add(NFT_MSG_NEWCHAIN, flags: NLM_F_CREATE, label: "add chain inet \(table) \(chain.name)") { header in
            let object = nftnl_chain_alloc()!
            defer { nftnl_chain_free(object) }
            nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
            nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_NAME.rawValue), chain.name)
            if let hook = chain.hook {
                nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TYPE.rawValue), "filter")
                nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue), Self.hookNumber(hook))
                nftnl_chain_set_s32(object, UInt16(NFTNL_CHAIN_PRIO.rawValue), chain.priority)
                nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_POLICY.rawValue), chain.policy == .accept ? UInt32(NF_ACCEPT) : UInt32(NF_DROP))
            }
            nftnl_chain_nlmsg_build_payload(header, object)
        }
    }

    private func addRule(_ rule: FirewallRule, chain: String, table: String, index: Int, setIDs: [String: UInt32],
                         to batch: NetlinkBatch) {
        let label = "add rule inet \(table) \(chain) #\(index + 1) (\(rule.nftText))"
        batch.add(NFT_MSG_NEWRULE, flags: NLM_F_CREATE | NLM_F_APPEND, label: label) { header in
            let object = nftnl_rule_alloc()!
            defer { nftnl_rule_free(object) }
            nftnl_rule_set_u32(object, UInt16(NFTNL_RULE_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_CHAIN.rawValue), chain)
            for expression in RuleExpressions.build(rule, setIDs: setIDs) { nftnl_rule_add_expr(object, expression) }
            nftnl_rule_nlmsg_build_payload(header, object)
        }
    }

    private static func hookNumber(_ hook: FirewallChain.Hook) -> UInt32 {
        switch hook {
        case .prerouting: return UInt32(NF_INET_PRE_ROUTING.rawValue)
        case .input: return UInt32(NF_INET_LOCAL_IN.rawValue)
        case .forward: return UInt32(NF_INET_FORWARD.rawValue)
        case .output: return UInt32(NF_INET_LOCAL_OUT.rawValue)
        case .postrouting: return UInt32(NF_INET_POST_ROUTING.rawValue)
        }
    }
}

/// Serialises a backend's transactions (a lock that returns the body's result).
final class TransactionLock: Sendable {
    private let lock = Mutex(())
    func run<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock { _ in try body() } }
}
