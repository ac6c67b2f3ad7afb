import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List the decision log: who did what, when, with what outcome (no agent needed).",
        discussion: """
            Every approval, enforce, confirm, rollback, discover, re-apply, isolate and release is an \
            append-only entry whose hash covers its fields and the previous entry's hash. --verify \
            checks the chain and exits 1 if any entry was altered or removed.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON (with each entry's sequence number, policy, management_whitelist and hashes).")
    var json = false

    @Flag(help: "Check every hash and link; exit 1 naming each entry that was altered or removed.")
    var verify = false

    func run() throws {
        let store: FlowStore
        let decisions: [Decision]
        do {
            store = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase)
            decisions = try store.decisions()
        } catch {
            throw CLIError.failed("\(error)")
        }
        if verify {
            let problems: [String]
            do { problems = try store.verifyDecisions() } catch { throw CLIError.failed("\(error)") }
            guard problems.isEmpty else {
                throw CLIError.failed("the decision log was tampered with:\n" + problems.map { "  " + $0 }.joined(separator: "\n"))
            }
            print("decision log intact: \(decisions.count) entries, head \(decisions.last.map { String($0.hash.prefix(16)) } ?? "-")")
            return
        }
        if json {
            try printJSON(decisions.map(DecisionJSON.init))
            return
        }
        guard !decisions.isEmpty else {
            print("the decision log is empty")
            return
        }
        var table = TextTable(header: ["TIME", "ACTION", "OPERATOR", "OUTCOME", "REASON"])
        for d in decisions {
            table.add([TimeText.rfc3339(d.appliedAt), d.action, d.operator, d.outcome, d.reason])
        }
        print(table.text, terminator: "")
    }
}

/// `log --json`: snake_case like every other JSON of the CLI.
struct DecisionJSON: Encodable {
    let sequence: Int64
    let id: String
    let action: String
    let `operator`: String
    let reason: String
    let backend: String
    let policy: String
    let policy_digest: String
    /// The channel as data ({protocol, address, port}); entries of the first releases have
    /// `whitelist`, a sentence, instead.
    let management_whitelist: [ManagementChannel.WhitelistEntry]
    let whitelist: String?
    let applied_at: String
    let outcome: String
    let previous_hash: String
    let hash: String

    init(_ d: Decision) {
        sequence = d.sequence
        id = d.id
        action = d.action
        self.operator = d.operator
        reason = d.reason
        backend = d.backend
        policy = d.policy
        policy_digest = d.policyDigest
        management_whitelist = d.managementWhitelist
        whitelist = d.format < 2 ? d.whitelist : nil
        applied_at = TimeText.rfc3339(d.appliedAt)
        outcome = d.outcome
        previous_hash = d.previousHash
        hash = d.hash
    }
}
