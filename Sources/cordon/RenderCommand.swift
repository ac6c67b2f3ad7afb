import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore
import Foundation

struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Print the nftables table `cordon enforce` would commit (no agent, no kernel).",
        discussion: """
            By default the latest approved ruleset with the management channel the agent last installed \
            (from the database). The text loads with `nft -f` to exactly what the agent commits, so it \
            can be compared with `nft list table inet cordon`.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON: sets with their elements, chains with their rules.")
    var json = false

    @Option(help: ArgumentHelp("Render this approved version instead of the latest.", valueName: "n"))
    var version: Int64?

    @Option(help: ArgumentHelp("Render a ruleset file instead (not approved: for comparison only).", valueName: "file"))
    var ruleset: String?

    @Option(help: ArgumentHelp("Take the management channel and log group from this agent config file.", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp(
        "Show what `enforce --confirm-within SECONDS` commits first (with the kernel's confirmation switch); by default the table in force once confirmed.",
        valueName: "seconds"))
    var confirmWithin: Int64?

    func validate() throws {
        if version != nil && ruleset != nil { throw ValidationError("--version and --ruleset exclude each other") }
        if let confirmWithin, !Engine.confirmRange.contains(confirmWithin) {
            throw ValidationError("--confirm-within must be between \(Engine.confirmRange.lowerBound) and \(Engine.confirmRange.upperBound) seconds")
        }
    }

    func run() throws {
        let (parsed, label) = try chooseRuleset()
        let (management, logGroup) = try managementChannel()
        let table = CordonTables.enforcement(ruleset: parsed, management: management, logGroup: logGroup,
                                             openAfter: confirmWithin.map { $0 + TransitionRunner.kernelGrace },
                                             names: .init(resolvers: management.resolvers, group: CordonTables.NameCapture.group(after: logGroup)))
        if json {
            try printJSON(RenderedTable(table, ruleset: label, management: management))
        } else {
            print("# \(label); management channel: \(management.summary)")
            print(table.nftText, terminator: "")
        }
    }

    private func chooseRuleset() throws -> (Ruleset, String) {
        if let ruleset { return (try loadRuleset(ruleset), "ruleset file \(ruleset) (not approved)") }
        do {
            let store = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase)
            let approved = try version.map { try store.ruleset(version: $0) } ?? store.latestRuleset()
            guard let approved else {
                throw CLIError.failed(version.map { "no approved ruleset version \($0)" } ?? "no approved ruleset yet (cordon approve)")
            }
            let parsed = try RulesetParser.parse(approved.content, file: "approved ruleset version \(approved.version)")
            return (parsed, "approved ruleset version \(approved.version) (sha256 \(approved.digest))")
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError.failed("\(error)")
        }
    }

    private func managementChannel() throws -> (ManagementChannel, UInt16) {
        if let config {
            do {
                let settings = try AgentConfig.load(path: config)
                return (settings.effectiveManagement(), settings.logGroup)
            } catch let error as ConfigError {
                throw CLIError.invalid(error.description)
            }
        }
        guard let store = try? FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase) else {
            return (AgentConfig().effectiveManagement(), CordonTables.defaultLogGroup)
        }
        let group = (try? store.persistedLogGroup()).flatMap { $0 } ?? CordonTables.defaultLogGroup
        return (try persistedManagement(store: store, config: nil), group)
    }
}

/// `render --json`: the table as data, elements and rules in nft's words.
struct RenderedTable: Encodable {
    struct Set: Encodable {
        var name: String
        var type: String
        var elements: [String]
    }
    struct Chain: Encodable {
        var name: String
        /// null for a regular chain (reached by `jump`).
        var hook: String?
        var priority: Int32
        var policy: String
        var rules: [String]
    }
    var table: String
    var family = "inet"
    var ruleset: String
    var management: String
    var sets: [Set]
    var chains: [Chain]

    init(_ table: FirewallTable, ruleset: String, management: ManagementChannel) {
        self.table = table.name
        self.ruleset = ruleset
        self.management = management.summary
        sets = table.sets.map { set in
            Set(name: set.name, type: set.fields.map(\.rawValue).joined(separator: " . "), elements: set.elements.map(set.elementText))
        }
        chains = table.chains.map {
            Chain(name: $0.name, hook: $0.hook?.rawValue, priority: $0.priority, policy: $0.policy.rawValue, rules: $0.rules.map(\.nftText))
        }
    }
}
