import ArgumentParser
import CordonWire

struct FleetReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Release an isolated host; always accepted, also while an isolation is pending for an offline host.",
        discussion: "The agent checks it still reaches the server through the rules it returns to; if not within 10 s it isolates again and the intent fails."
    )

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The host's id or host name.", valueName: "host"))
    var host: String

    @Option(help: "Why: recorded with the intent and in the host's decision log.")
    var reason: String = "released from the fleet console"

    @Option(name: .customLong("external-id"), help: ArgumentHelp("A ticket or case id to record with it.", valueName: "id"))
    var externalID: String?

    @Option(help: ArgumentHelp("Seconds to wait for the agent's confirmation (0: do not wait).", valueName: "seconds"))
    var wait: Double = 20

    func run() throws {
        try FleetIntentRequest.send(fleet, host: host, IsolationRequest(state: .released, reason: reason, externalID: externalID), wait: wait)
    }
}
