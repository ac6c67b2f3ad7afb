import ArgumentParser
import CordonWire

struct FleetDiscoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "discover",
        abstract: "Bring hosts back to discovery, in waves, as a rollout (approver role).",
        discussion: """
            A rollout whose mode is discovery: nothing is blocked on the hosts it reaches and their \
            flows are recorded again. It is followed and controlled with `cordon fleet rollout`.
            """)

    @OptionGroup var fleet: FleetOptions
    @OptionGroup var rollout: RolloutOptions

    func run() throws { try RolloutOptions.start(fleet, rollout.request(.discovery)) }
}
