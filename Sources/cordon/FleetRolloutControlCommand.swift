import ArgumentParser
import CordonFleetClient
import CordonWire

/// `rollout halt|resume|abort ID`: one request each, the answer shown as `rollout status` does.
struct RolloutControlOptions: ParsableArguments {
    @Argument(help: ArgumentHelp("The rollout's id.", valueName: "id"))
    var id: String

    @Option(help: ArgumentHelp("Why, for the audit log.", valueName: "text"))
    var reason: String?

    func send(_ action: String, _ fleet: FleetOptions) throws {
        let client = try fleet.client()
        let path = "/api/v1/rollouts/\(FleetClient.queryValue(id))/\(action)"
        let view = try awaiting { try await client.call(.POST, path, body: RolloutControl(reason: reason), timeout: 60, as: RolloutView.self) }
        if fleet.json { return try printJSON(view) }
        FleetRolloutStatusCommand.show(view)
    }
}

struct FleetRolloutHaltCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "halt",
                                                    abstract: "Halt a running rollout: its current wave goes back to what it ran before (approver role).")
    @OptionGroup var fleet: FleetOptions
    @OptionGroup var control: RolloutControlOptions
    func run() throws { try control.send("halt", fleet) }
}

struct FleetRolloutResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume",
                                                    abstract: "Resume a halted rollout at the wave it halted in, with the hosts' effective policies as they are now (approver role).")
    @OptionGroup var fleet: FleetOptions
    @OptionGroup var control: RolloutControlOptions
    func run() throws { try control.send("resume", fleet) }
}

struct FleetRolloutAbortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "abort",
                                                    abstract: "End a rollout for good: a running wave goes back; waves done stay done (approver role).")
    @OptionGroup var fleet: FleetOptions
    @OptionGroup var control: RolloutControlOptions
    func run() throws { try control.send("abort", fleet) }
}
