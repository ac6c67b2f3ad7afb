#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore

/// Translates a rule into nf_tables expressions, the small register machine the kernel runs per
/// packet. Each match loads a field into a register and compares it; the rule owns the results.
enum RuleExpressions {
    static func build(_ rule: FirewallRule, setIDs: [String: UInt32]) -> [OpaquePointer] {
        var result: [OpaquePointer] = []
        for match in rule.matches {
            switch match {
            case .conntrackState(let states):
                let ct = nftnl_expr_alloc("ct")!
                nftnl_expr_set_u32(ct, UInt16(NFTNL_EXPR_CT_KEY), UInt32(NFT_CT_STATE.rawValue))
                nftnl_expr_set_u32(ct, UInt16(NFTNL_EXPR_CT_DREG), register)
                result.append(ct)
                result.append(bitwise(mask: states.reduce(UInt32(0)) { $0 | $1.bit }))
                result.append(compare(NFT_CMP_NEQ, [0, 0, 0, 0]))
            case .loopback(let side):
                result.append(meta(side == .incoming ? NFT_META_IIF : NFT_META_OIF, into: register))
                // Interface index 1 in host byte order: loopback in every namespace.
                result.append(compare(NFT_CMP_EQ, withUnsafeBytes(of: UInt32(1)) { Array($0) }))
            case .family(let family):
                result.append(meta(NFT_META_NFPROTO, into: register))
                result.append(compare(NFT_CMP_EQ, [UInt8(family == .ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6)]))
            case .transport(let number):
                result.append(meta(NFT_META_L4PROTO, into: register))
                result.append(compare(NFT_CMP_EQ, [number]))
            case .icmpv6Type(let range), .icmpType(let range):
                result.append(payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 0, length: 1, into: register))
                let expression = nftnl_expr_alloc("range")!
                var from = range.lowerBound, to = range.upperBound
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_RANGE_SREG), register)
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_RANGE_OP), UInt32(NFT_RANGE_EQ.rawValue))
                nftnl_expr_set(expression, UInt16(NFTNL_EXPR_RANGE_FROM_DATA), &from, 1)
                nftnl_expr_set(expression, UInt16(NFTNL_EXPR_RANGE_TO_DATA), &to, 1)
                result.append(expression)
            case .inSet(let name, let key):
                result += lookup(name, key: key, id: setIDs[name])
            case .familyNotInSet(let name):
                result.append(meta(NFT_META_NFPROTO, into: register))
                let expression = nftnl_expr_alloc("lookup")!
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SREG), register)
                nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_LOOKUP_SET), name)
                if let id = setIDs[name] { nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SET_ID), id) }
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_FLAGS), UInt32(NFT_LOOKUP_F_INV.rawValue))
                result.append(expression)
            }
        }
        if rule.counter { result.append(nftnl_expr_alloc("counter")!) }
        if let log = rule.log {
            let expression = nftnl_expr_alloc("log")!
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_LOG_PREFIX), log.prefix)
            nftnl_expr_set_u16(expression, UInt16(NFTNL_EXPR_LOG_GROUP), log.group)
            result.append(expression)
        }
        switch rule.verdict {
        case nil: break
        case .accept: result.append(immediate(UInt32(NF_ACCEPT)))
        case .drop: result.append(immediate(UInt32(NF_DROP)))
        case .jump(let chain):
            let expression = immediate(UInt32(bitPattern: NFT_JUMP.rawValue))
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_IMM_CHAIN), chain)
            result.append(expression)
        case .queue(let number):
            // The xtables NFQUEUE target (revision 3) through nft_compat, not nf_tables' own
            // `queue` expression: kernels built without CONFIG_NFT_QUEUE (this project's CI
            // machines among them) still have it. struct xt_NFQ_info_v3, host byte order:
            // queue number, queues in total, flags (bypass); padded to 8 bytes (XT_ALIGN).
            let expression = nftnl_expr_alloc("target")!
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_TG_NAME), "NFQUEUE")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_TG_REV), 3)
            let info: [UInt16] = [number, 1, 0x01, 0]
            // libnftnl keeps this pointer and free()s it with the expression: malloc'd, not Swift's.
            let bytes = malloc(8)!
            info.withUnsafeBytes { bytes.copyMemory(from: $0.baseAddress!, byteCount: 8) }
            nftnl_expr_set(expression, UInt16(NFTNL_EXPR_TG_INFO), bytes, 8)
            result.append(expression)
        case .reject(let kind):
            let expression = nftnl_expr_alloc("reject")!
            if kind == .tcpReset {
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_REJECT_TYPE), UInt32(NFT_REJECT_TCP_RST.rawValue))
                nftnl_expr_set_u8(expression, UInt16(NFTNL_EXPR_REJECT_CODE), 0)
            } else {
                nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_REJECT_TYPE), UInt32(NFT_REJECT_ICMPX_UNREACH.rawValue))
                nftnl_expr_set_u8(expression, UInt16(NFTNL_EXPR_REJECT_CODE), UInt8(NFT_REJECT_ICMPX_ADMIN_PROHIBITED.rawValue))
            }
            result.append(expression)
        }
        return result
    }

    /// Every match uses the same 32-bit register bank from its start; a concatenation fills
    /// consecutive registers, each field rounded up to 4 bytes as the set's key is.
    private static let register = UInt32(NFT_REG32_00.rawValue)

    private static func lookup(_ name: String, key: FirewallRule.SetKey, id: UInt32?) -> [OpaquePointer] {
        var result: [OpaquePointer] = []
        var next = register
        for field in key.fields {
            switch field {
            case .ipv4Address:
                result.append(payload(NFT_PAYLOAD_NETWORK_HEADER, offset: key.peer == .incoming ? 12 : 16, length: 4, into: next))
                if let mask = key.mask(.ipv4) { result.append(bitwise(mask: mask.bytes, register: next)) }
            case .ipv6Address:
                result.append(payload(NFT_PAYLOAD_NETWORK_HEADER, offset: key.peer == .incoming ? 8 : 24, length: 16, into: next))
                if let mask = key.mask(.ipv6) { result.append(bitwise(mask: mask.bytes, register: next)) }
            case .transport:
                result.append(meta(NFT_META_L4PROTO, into: next))
            case .port:
                result.append(payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: key.sourcePort ? 0 : 2, length: 2, into: next))
            case .icmpType, .icmpv6Type:
                result.append(payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 0, length: 1, into: next))
            case .icmpCode, .icmpv6Code:
                result.append(payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 1, length: 1, into: next))
            case .family:
                result.append(meta(NFT_META_NFPROTO, into: next))
            }
            next += UInt32((field.length + 3) / 4)
        }
        let expression = nftnl_expr_alloc("lookup")!
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SREG), register)
        nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_LOOKUP_SET), name)
        if let id { nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SET_ID), id) }
        result.append(expression)
        return result
    }

    private static func meta(_ key: nft_meta_keys, into register: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("meta")!
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_KEY), UInt32(key.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_DREG), register)
        return expression
    }

    private static func payload(_ base: nft_payload_bases, offset: UInt32, length: UInt32, into register: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("payload")!
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_BASE), UInt32(base.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_LEN), length)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_DREG), register)
        return expression
    }

    /// register = register & mask, over the mask's length (an address prefix), in place.
    private static func bitwise(mask: [UInt8], register: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("bitwise")!
        var mask = mask, zero = [UInt8](repeating: 0, count: mask.count)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_SREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_DREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_LEN), UInt32(mask.count))
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_MASK), &mask, UInt32(mask.count))
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_XOR), &zero, UInt32(zero.count))
        return expression
    }

    /// register & mask (the ct state bits a rule asks for), in place.
    private static func bitwise(mask: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("bitwise")!
        var mask = mask, zero: UInt32 = 0
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_SREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_DREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_LEN), 4)
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_MASK), &mask, 4)
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_XOR), &zero, 4)
        return expression
    }

    private static func compare(_ op: nft_cmp_ops, _ data: [UInt8]) -> OpaquePointer {
        let expression = nftnl_expr_alloc("cmp")!
        var data = data
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_SREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_OP), UInt32(op.rawValue))
        nftnl_expr_set(expression, UInt16(NFTNL_EXPR_CMP_DATA), &data, UInt32(data.count))
        return expression
    }

    private static func immediate(_ verdict: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("immediate")!
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_IMM_DREG), UInt32(NFT_REG_VERDICT.rawValue))
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_IMM_VERDICT), verdict)
        return expression
    }
}
