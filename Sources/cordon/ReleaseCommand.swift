import ArgumentParser
import CordonAgent

struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "End an isolation, then check the management channel; re-isolate if it fails.",
        discussion: """
            Deletes the overlay by the handle recorded when it was applied, so the host is exactly in its \\
            previous mode, then connects to every collector for up to 10 s. If that fails the overlay goes \\
            back, the escalation is logged, and the command exits 1. A release supersedes any isolate \\
            still pending. Through the agent, or directly when none answers.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("operator"), help: ArgumentHelp("Who releases (recorded).", valueName: "name"))
    var operatorName: String

    @Option(help: ArgumentHelp("Why (recorded).", valueName: "text"))
    var reason: String = ""

    @Option(help: ArgumentHelp("Without an agent: take the management channel from this agent config file.", valueName: "file"))
    var config: String?

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
    }

    func run() throws {
        try emergency(global, config: config, request: ControlRequest(command: "release", operator: operatorName, reason: reason)) {
            $0.release(operator: operatorName, reason: reason)
        }
    }
}
