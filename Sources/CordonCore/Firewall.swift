/// The firewall Cordon wants in the kernel, as plain data.
///
/// Rendering to data first keeps the decision of *what* to install pure and testable (and
/// printable as nft syntax for an operator to compare with `nft list table`); a backend only
/// translates it into one kernel transaction.
public struct FirewallTable: Hashable, Sendable {
    /// Cordon's tables are `inet` (IPv4 and IPv6 in one).
    public var name: String
    public var chains: [FirewallChain]

    public init(name: String, chains: [FirewallChain]) {
        self.name = name
        self.chains = chains
    }

    /// nft syntax, as `nft list table inet NAME` would show it.
    public var nftText: String {
        var lines = ["table inet \(name) {"]
        for (index, chain) in chains.enumerated() {
            if index > 0 { lines.append("") }
            lines.append("\tchain \(chain.name) {")
            lines.append("\t\ttype filter hook \(chain.hook.rawValue) priority \(chain.priority); policy \(chain.policy.rawValue);")
            lines += chain.rules.map { "\t\t" + $0.nftText }
            lines.append("\t}")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}

public struct FirewallChain: Hashable, Sendable {
    public enum Hook: String, Sendable, CaseIterable { case prerouting, input, forward, output, postrouting }
    public var name: String
    public var hook: Hook
    /// Lower runs first; `filter` is 0.
    public var priority: Int32
    public var policy: Verdict
    public var rules: [FirewallRule]

    public init(name: String, hook: Hook, priority: Int32 = 0, policy: Verdict, rules: [FirewallRule]) {
        self.name = name
        self.hook = hook
        self.priority = priority
        self.policy = policy
        self.rules = rules
    }
}

public enum Verdict: String, Hashable, Sendable { case accept, drop }

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
    public enum Match: Hashable, Sendable {
        case conntrackState(Set<ConntrackState>)
    }

    public var matches: [Match]
    public var counter: Bool
    public var verdict: Verdict?

    public init(matches: [Match], counter: Bool = false, verdict: Verdict?) {
        self.matches = matches
        self.counter = counter
        self.verdict = verdict
    }

    public var nftText: String {
        var words: [String] = []
        for match in matches {
            switch match {
            case .conntrackState(let states):
                words.append("ct state " + states.sorted().map(\.rawValue).joined(separator: ","))
            }
        }
        if counter { words.append("counter") }
        if let verdict { words.append(verdict.rawValue) }
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
    public static func discovery() -> FirewallTable {
        let rule = FirewallRule(matches: [.conntrackState([.established, .related])], verdict: .accept)
        return FirewallTable(name: baseName, chains: [
            FirewallChain(name: "input", hook: .input, policy: .accept, rules: [rule]),
            FirewallChain(name: "forward", hook: .forward, policy: .accept, rules: [rule]),
            FirewallChain(name: "output", hook: .output, policy: .accept, rules: [rule]),
        ])
    }
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
}
