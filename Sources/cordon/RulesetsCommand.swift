import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore

struct RulesetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rulesets", abstract: "List the approved ruleset versions.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON (with each version's content).")
    var json = false

    func run() throws {
        let versions: [RulesetVersion]
        do {
            versions = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase).rulesetVersions()
        } catch {
            throw CLIError.failed("\(error)")
        }
        if json {
            try printJSON(versions.map(RulesetVersionJSON.init))
            return
        }
        guard !versions.isEmpty else {
            print("no ruleset approved yet")
            return
        }
        var table = TextTable(header: ["VERSION", "APPROVED", "OPERATOR", "SHA256", "RISKS ACCEPTED", "SOURCE"])
        for v in versions {
            table.add([String(v.version), TimeText.rfc3339(v.approvedAt), v.operator, String(v.digest.prefix(16)),
                       v.acceptedRisks.isEmpty ? "-" : v.acceptedRisks.joined(separator: ","), v.source])
        }
        print(table.text, terminator: "")
    }
}

/// `rulesets --json`: snake_case like every other JSON of the CLI.
struct RulesetVersionJSON: Encodable {
    let version: Int64
    let digest: String
    let source: String
    let `operator`: String
    let approved_at: String
    let accepted_risks: [String]
    let content: String

    init(_ v: RulesetVersion) {
        version = v.version
        digest = v.digest
        source = v.source
        self.operator = v.operator
        approved_at = TimeText.rfc3339(v.approvedAt)
        accepted_risks = v.acceptedRisks
        content = v.content
    }
}
