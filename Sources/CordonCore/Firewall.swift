/// The firewall Cordon wants in the kernel, as plain data.
///
/// Rendering to data first keeps the decision of *what* to install pure and testable (and
/// printable as nft syntax for an operator to compare with `nft list table`); a backend only
/// translates it into one kernel transaction. The vocabulary is deliberately small: what the
/// discovery, enforcement and (later) isolation tables need, each piece with one meaning.
public struct FirewallTable: Hashable, Sendable {
    /// Cordon's tables are `inet` (IPv4 and IPv6 in one).
    public var name: String
    public var sets: [FirewallSet]
    public var chains: [FirewallChain]

    public init(name: String, sets: [FirewallSet] = [], chains: [FirewallChain]) {
        self.name = name
        self.sets = sets
        self.chains = chains
    }

    public func set(named name: String) -> FirewallSet? { sets.first { $0.name == name } }

    /// nft syntax that `nft -f` accepts and that loads exactly what the backend commits: sets
    /// first, then chains, in the layout of `nft list table`.
    public var nftText: String {
        var lines = ["table inet \(name) {"]
        for set in sets {
            lines += set.nftLines.map { "\t" + $0 }
            lines.append("")
        }
        for (index, chain) in chains.enumerated() {
            if index > 0 { lines.append("") }
            lines.append("\tchain \(chain.name) {")
            if let hook = chain.hook {
                lines.append("\t\ttype filter hook \(hook.rawValue) priority \(chain.priority); policy \(chain.policy.rawValue);")
            }
            lines += chain.rules.map { "\t\t" + $0.nftText }
            lines.append("\t}")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}

public struct FirewallChain: Hashable, Sendable {
    public enum Hook: String, Sendable, CaseIterable { case prerouting, input, forward, output, postrouting }
    /// What a base chain does with a packet no rule decided on.
    public enum Policy: String, Hashable, Sendable { case accept, drop }

    public var name: String
    /// nil for a regular chain, reached only by a `jump` from a rule.
    public var hook: Hook?
    /// Lower runs first; `filter` is 0. Base chains only.
    public var priority: Int32
    /// Base chains only: a regular chain returns to its caller when no rule decided.
    public var policy: Policy
    public var rules: [FirewallRule]

    public init(name: String, hook: Hook?, priority: Int32 = 0, policy: Policy = .accept, rules: [FirewallRule]) {
        self.name = name
        self.hook = hook
        self.priority = priority
        self.policy = policy
        self.rules = rules
    }
}

/// What a rule does with a packet it matched.
public enum Verdict: Hashable, Sendable {
    case accept
    /// Silently: the sender learns nothing and waits for its timeout.
    case drop
    /// Answers so that a local program fails at once instead of hanging.
    case reject(Rejection)
    /// Continues in a regular chain of the same table.
    case jump(String)
    /// Hands the packet to the program bound to this nfnetlink queue, which decides; with no
    /// program bound (the agent gone) the kernel accepts it (`bypass`), so it can never be stuck.
    case queue(UInt16)

    public enum Rejection: Hashable, Sendable {
        /// A TCP reset (connect() fails with ECONNREFUSED); the rule must match TCP only.
        case tcpReset
        /// ICMP / ICMPv6 "administratively prohibited", for any protocol and both families.
        case adminProhibited
    }

    public var nftText: String {
        switch self {
        case .accept: return "accept"
        case .drop: return "drop"
        case .reject(.tcpReset): return "reject with tcp reset"
        case .reject(.adminProhibited): return "reject with icmpx admin-prohibited"
        case .jump(let chain): return "jump \(chain)"
        case .queue(let number): return "queue flags bypass to \(number)"
        }
    }
}

/// Conntrack states a rule can match, with the kernel's bit for each (`NF_CT_STATE_BIT`).
public enum ConntrackState: String, Hashable, Sendable, CaseIterable, Comparable {
    case invalid, established, related, new, untracked

    public var bit: UInt32 {
        switch self {
        case .invalid: return 1 << 0
        case .established: return 1 << 1
        case .related: return 1 << 2
        case .new: return 1 << 3
        case .untracked: return 1 << 6
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

public struct FirewallRule: Hashable, Sendable {
    /// Conditions, all of which must hold, evaluated in order (cheap ones first).
    public enum Match: Hashable, Sendable {
        case conntrackState(Set<ConntrackState>)
        /// The packet arrived on (input) or leaves by (output) the loopback interface. Loopback is
        /// interface 1 in every network namespace, so the match is one integer comparison.
        case loopback(Side)
        /// IPv4 or IPv6: guards every match that reads a network header field.
        case family(AddressFamily)
        /// The transport protocol (`meta l4proto`).
        case transport(UInt8)
        /// An ICMPv6 type in a range (neighbour discovery); needs `.transport(58)` before it.
        case icmpv6Type(ClosedRange<UInt8>)
        /// An ICMP (IPv4) type in a range; needs `.transport(1)` before it.
        case icmpType(ClosedRange<UInt8>)
        /// The packet's key is in a set: the peer's address (source on input, destination on
        /// output) concatenated with the set's other fields. Needs `.family` before it.
        case inSet(name: String, key: SetKey)
        /// The packet's family is *not* in the set: true once the set's elements have expired.
        /// The confirmation switch (see `CordonTables.enforcement`).
        case familyNotInSet(name: String)
    }

    public enum Side: String, Hashable, Sendable { case incoming = "iif", outgoing = "oif" }

    /// The packet fields a set lookup concatenates, in the set's field order.
    public struct SetKey: Hashable, Sendable {
        public var peer: Side
        public var fields: [FirewallSet.Field]
        /// The port field is the packet's source port: the peer's port on a reply. Isolation
        /// matches replies this way, without trusting conntrack state.
        public var sourcePort: Bool
        /// The address is masked to this prefix length before the lookup (an exact set of one
        /// prefix length); nil: the whole address.
        public var addressPrefix: Int?
        public init(peer: Side, fields: [FirewallSet.Field], sourcePort: Bool = false, addressPrefix: Int? = nil) {
            self.peer = peer
            self.fields = fields
            self.sourcePort = sourcePort
            self.addressPrefix = addressPrefix
        }

        /// The mask of `addressPrefix` as an address of the family (255.255.255.192, ffff:ffff::).
        public func mask(_ family: AddressFamily) -> IPAddress? {
            addressPrefix.map { IPAddress(value: $0 == 0 ? 0 : ~UInt128(0) << (family.bitWidth - $0), family: family).masked(to: family.bitWidth) }
        }

        var nftText: String {
            fields.map { field in
                switch field {
                case .ipv4Address: return (peer == .incoming ? "ip saddr" : "ip daddr") + (mask(.ipv4).map { " & \($0)" } ?? "")
                case .ipv6Address: return (peer == .incoming ? "ip6 saddr" : "ip6 daddr") + (mask(.ipv6).map { " & \($0)" } ?? "")
                case .transport: return "meta l4proto"
                case .port: return sourcePort ? "th sport" : "th dport"
                case .icmpType: return "icmp type"
                case .icmpCode: return "icmp code"
                case .icmpv6Type: return "icmpv6 type"
                case .icmpv6Code: return "icmpv6 code"
                case .family: return "meta nfproto"
                }
            }.joined(separator: " . ")
        }
    }

    /// Sends matching packets to an NFLOG group, where the agent reads them (red flows).
    public struct Log: Hashable, Sendable {
        public var prefix: String
        public var group: UInt16
        public init(prefix: String, group: UInt16) {
            self.prefix = prefix
            self.group = group
        }
    }

    public var matches: [Match]
    public var counter: Bool
    public var log: Log?
    public var verdict: Verdict?

    public init(matches: [Match], counter: Bool = false, log: Log? = nil, verdict: Verdict?) {
        self.matches = matches
        self.counter = counter
        self.log = log
        self.verdict = verdict
    }

    public var nftText: String {
        var words: [String] = []
        for match in matches {
            switch match {
            case .conntrackState(let states):
                words.append("ct state " + states.sorted().map(\.rawValue).joined(separator: ","))
            case .loopback(let side):
                words.append("\(side.rawValue) \"lo\"")
            case .family(let family):
                words.append("meta nfproto \(family.rawValue)")
            case .transport(let number):
                words.append("meta l4proto \(FirewallSet.Field.transportName(number))")
            case .icmpv6Type(let range):
                words.append(range.count == 1 ? "icmpv6 type \(range.lowerBound)" : "icmpv6 type \(range.lowerBound)-\(range.upperBound)")
            case .icmpType(let range):
                words.append(range.count == 1 ? "icmp type \(range.lowerBound)" : "icmp type \(range.lowerBound)-\(range.upperBound)")
            case .inSet(let name, let key):
                words.append("\(key.nftText) @\(name)")
            case .familyNotInSet(let name):
                words.append("meta nfproto != @\(name)")
            }
        }
        if counter { words.append("counter") }
        if let log { words.append("log prefix \"\(log.prefix)\" group \(log.group)") }
        if let verdict { words.append(verdict.nftText) }
        return words.joined(separator: " ")
    }
}

/// The tables Cordon installs.
public enum CordonTables {
    /// Cordon's base table. In discovery it only makes the kernel track connections; enforcement
    /// replaces its content in the same transaction.
    public static let baseName = "cordon"

    /// Accept-all, with a conntrack rule in each hook.
    ///
    /// A network namespace tracks no connections until some rule uses conntrack; on a host with no
    /// firewall this table is what makes discovery see anything. It accepts everything, and an
    /// accept in one base chain never overrides a drop in another table, so it cannot open a host.
    ///
    /// - Parameter names: the resolvers whose answers the agent learns names from (see `nameCapture`).
    public static func discovery(names: NameCapture? = nil) -> FirewallTable {
        let rule = FirewallRule(matches: [.conntrackState([.established, .related])], verdict: .accept)
        let capture = nameCapture(names)
        return FirewallTable(name: baseName, sets: capture.sets, chains: [
            FirewallChain(name: "input", hook: .input, policy: .accept, rules: capture.rules + [rule]),
            FirewallChain(name: "forward", hook: .forward, policy: .accept, rules: [rule]),
            FirewallChain(name: "output", hook: .output, policy: .accept, rules: [rule]),
        ])
    }
}

/// A backend error that knows whether the kernel may have applied the change anyway (an
/// acknowledgement that never came). Callers treat any other error as "may have applied".
public protocol FirewallBackendError: Error {
    /// True when the kernel certainly applied nothing: the transaction was refused, or never sent.
    var changedNothing: Bool { get }
}

/// Where Cordon's tables are installed. One implementation per kernel interface; the agent only
/// talks to this protocol.
public protocol FirewallBackend: Sendable {
    /// Shown in `cordon status` and recorded in the decision log.
    var name: String { get }
    /// Replaces (or creates) a table in one transaction: no instant with the old and new content
    /// mixed, nor without either. On failure the previous table is left exactly as it was.
    func replace(_ table: FirewallTable) throws
    /// Deletes a table if it exists, touching no other table.
    func remove(table name: String) throws
    /// The kernel's handle of a table, nil when it does not exist.
    func handle(of table: String) throws -> UInt64?
    /// Several tables replaced or removed in one transaction: all of it, or none.
    func apply(_ changes: [TableChange]) throws
}

/// One table's part of a transaction.
public enum TableChange: Sendable, Equatable {
    case replace(FirewallTable)
    /// Deletes the table if it exists.
    case remove(String)

    public var isRemoval: Bool {
        if case .remove = self { return true }
        return false
    }

    public var tableName: String {
        switch self {
        case .replace(let table): return table.name
        case .remove(let name): return name
        }
    }
}
