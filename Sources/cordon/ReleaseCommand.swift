import ArgumentParser
import CordonAgent

struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "End an isolation, then check the management channel; re-isolate if it fails.",
        discussion: """
            Deletes the overlay in one transaction, so the host is exactly in its \
            previous mode, then connects to every collector for up to 10 s. If that fails the overlay goes \
            back, the escalation is logged, and the command exits 1. A release supersedes any isolate \
            still pending. Through the agent, or directly when none answers (refused, changing nothing, \
            when the database cannot be written: a release must be on record).
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: EmergencyOptions

    func run() throws {
        try emergency(global, options, command: "release") { runner, store in
            Emergency.release(runner: runner, store: store, operator: options.operatorName, reason: options.reason)
        }
    }
}
