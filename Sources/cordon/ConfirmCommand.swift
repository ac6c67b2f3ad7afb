import ArgumentParser
import CordonAgent

struct ConfirmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "confirm",
        abstract: "Keep the enforced ruleset: cancel the automatic rollback (through the agent).",
        discussion: "Confirm only from a session opened after `cordon enforce`: that proves the way in still works."
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("operator"), help: ArgumentHelp("Who confirms (recorded in the decision log).", valueName: "name"))
    var operatorName: String

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
    }

    func run() throws {
        try sendToAgent(global, .confirm(operator: operatorName))
    }
}
