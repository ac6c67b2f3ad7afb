#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore

/// nf_tables over netlink with libnftnl and libmnl: no `nft` binary, one batch per change.
public struct NftablesBackend: FirewallBackend {
    public let name = "nftables"

    public init() {}

    public func replace(_ table: FirewallTable) throws {
        let batch = NetlinkBatch()
        // add + delete + add: the first add makes the delete valid when the table is absent;
        // deleting (rather than flushing) also drops set elements and chains no longer wanted.
        addTable(table.name, to: batch)
        batch.add(NFT_MSG_DELTABLE, flags: 0, label: "delete table inet \(table.name)") { header in
            Self.withTable(table.name) { nftnl_table_nlmsg_build_payload(header, $0) }
        }
        addTable(table.name, to: batch)
        for chain in table.chains {
            addChain(chain, table: table.name, to: batch)
            for (index, rule) in chain.rules.enumerated() {
                addRule(rule, chain: chain.name, table: table.name, index: index, to: batch)
            }
        }
        try batch.commit()
    }

    public func remove(table name: String) throws {
        let batch = NetlinkBatch()
        addTable(name, to: batch)
        batch.add(NFT_MSG_DELTABLE, flags: 0, label: "delete table inet \(name)") { header in
            Self.withTable(name) { nftnl_table_nlmsg_build_payload(header, $0) }
        }
        try batch.commit()
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

    private func addChain(_ chain: FirewallChain, table: String, to batch: NetlinkBatch) {
        batch.add(NFT_MSG_NEWCHAIN, flags: NLM_F_CREATE, label: "add chain inet \(table) \(chain.name)") { header in
            let object = nftnl_chain_alloc()!
            defer { nftnl_chain_free(object) }
            nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
            nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_NAME.rawValue), chain.name)
            nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TYPE.rawValue), "filter")
            nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue), Self.hookNumber(chain.hook))
            nftnl_chain_set_s32(object, UInt16(NFTNL_CHAIN_PRIO.rawValue), chain.priority)
            nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_POLICY.rawValue), Self.verdictCode(chain.policy))
            nftnl_chain_nlmsg_build_payload(header, object)
        }
    }

    private func addRule(_ rule: FirewallRule, chain: String, table: String, index: Int, to batch: NetlinkBatch) {
        let label = "add rule inet \(table) \(chain) #\(index + 1) (\(rule.nftText))"
        batch.add(NFT_MSG_NEWRULE, flags: NLM_F_CREATE | NLM_F_APPEND, label: label) { header in
            let object = nftnl_rule_alloc()!
            defer { nftnl_rule_free(object) }
            nftnl_rule_set_u32(object, UInt16(NFTNL_RULE_FAMILY.rawValue), UInt32(NFPROTO_INET))
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_CHAIN.rawValue), chain)
            for expression in Self.expressions(for: rule) { nftnl_rule_add_expr(object, expression) }
            nftnl_rule_nlmsg_build_payload(header, object)
        }
    }

    /// Translates a rule into nf_tables expressions; the rule then owns them.
    private static func expressions(for rule: FirewallRule) -> [OpaquePointer] {
        var result: [OpaquePointer] = []
        for match in rule.matches {
            switch match {
            case .conntrackState(let states):
                let mask = states.reduce(UInt32(0)) { $0 | $1.bit }
                let ct = nftnl_expr_alloc("ct")!
                nftnl_expr_set_u32(ct, UInt16(NFTNL_EXPR_CT_KEY), UInt32(NFT_CT_STATE.rawValue))
                nftnl_expr_set_u32(ct, UInt16(NFTNL_EXPR_CT_DREG), UInt32(NFT_REG_1.rawValue))
                result.append(ct)
                result.append(bitwise(mask: mask))
                result.append(compareNotZero())
            }
        }
        if rule.counter { result.append(nftnl_expr_alloc("counter")!) }
        if let verdict = rule.verdict {
            let immediate = nftnl_expr_alloc("immediate")!
            nftnl_expr_set_u32(immediate, UInt16(NFTNL_EXPR_IMM_DREG), UInt32(NFT_REG_VERDICT.rawValue))
            nftnl_expr_set_u32(immediate, UInt16(NFTNL_EXPR_IMM_VERDICT), verdictCode(verdict))
            result.append(immediate)
        }
        return result
    }

    /// reg1 = reg1 & mask (the ct state bits a rule asks for).
    private static func bitwise(mask: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("bitwise")!
        var mask = mask, zero: UInt32 = 0
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_SREG), UInt32(NFT_REG_1.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_DREG), UInt32(NFT_REG_1.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_LEN), 4)
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_MASK), &mask, 4)
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_XOR), &zero, 4)
        return expression
    }

    /// reg1 != 0.
    private static func compareNotZero() -> OpaquePointer {
        let expression = nftnl_expr_alloc("cmp")!
        var zero: UInt32 = 0
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_SREG), UInt32(NFT_REG_1.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_OP), UInt32(NFT_CMP_NEQ.rawValue))
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_CMP_DATA), &zero, 4)
        return expression
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

    private static func verdictCode(_ verdict: Verdict) -> UInt32 {
        verdict == .accept ? UInt32(NF_ACCEPT) : UInt32(NF_DROP)
    }
}
