import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore

struct ActionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "actions",
        abstract: "List requested isolate and release actions with their status (no agent needed).",
        discussion: "Statuses: applied, failed, noop, superseded (a release wins over earlier isolates); never left pending."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let actions: [ActionRecord]
        do {
            actions = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase).actions()
        } catch {
            throw CLIError.failed("\(error)")
        }
        if json {
            try printJSON(actions.map(ActionJSON.init))
            return
        }
        guard !actions.isEmpty else {
            print("no actions requested")
            return
        }
        var table = TextTable(header: ["REQUESTED", "ACTION", "OPERATOR", "STATUS", "DETAIL"])
        for a in actions {
            table.add([TimeText.rfc3339(a.requestedAt), a.action, a.operator, a.status.rawValue, a.detail])
        }
        print(table.text, terminator: "")
    }
}

struct ActionJSON: Encodable {
    let id: String
    let action: String
    let `operator`: String
    let reason: String
    let requested_at: String
    let status: String
    let detail: String
    let updated_at: String

    init(_ a: ActionRecord) {
        id = a.id
        action = a.action
        self.operator = a.operator
        reason = a.reason
        requested_at = TimeText.rfc3339(a.requestedAt)
        status = a.status.rawValue
        detail = a.detail
        updated_at = TimeText.rfc3339(a.updatedAt)
    }
}
