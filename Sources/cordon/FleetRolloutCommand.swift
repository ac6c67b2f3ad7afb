import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonWire

struct FleetRolloutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Bring hosts to enforce with their effective policy, one wave at a time, halting by itself.",
        subcommands: [FleetRolloutStartCommand.self, FleetRolloutStatusCommand.self, FleetRolloutHaltCommand.self,
                      FleetRolloutResumeCommand.self, FleetRolloutAbortCommand.self])
}

/// The options `rollout start` and `discover` share.
struct RolloutOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The hosts it is for.", valueName: "selector"))
    var selector: String

    @Option(help: ArgumentHelp("Cumulative wave sizes, a count of hosts or a share; the last must be 100%.", valueName: "sizes"))
    var waves = RolloutRequest.defaultWaves.joined(separator: ",")

    @Option(help: ArgumentHelp("How long a wave runs confirmed before the next starts (90s, 15m, 2h).", valueName: "span"))
    var soak = "15m"

    @Option(name: .customLong("confirm-window"), help: ArgumentHelp("Each host's confirm window.", valueName: "span"))
    var confirmWindow = "120s"

    @Option(name: .customLong("max-failures"), help: ArgumentHelp("Hosts that may fail across the later waves (the first allows none).", valueName: "n"))
    var maxFailures = 0

    func validate() throws {
        do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") }
        do { try WaveSizes.check(sizes) } catch { throw ValidationError("--waves: \(error.description)") }
        guard TimeText.duration(soak) != nil else { throw ValidationError("--soak: expected a span such as 90s, 15m or 2h") }
        guard let window = TimeText.duration(confirmWindow), Engine.confirmRange.contains(window) else {
            throw ValidationError("--confirm-window: expected a span from 1s to 1d")
        }
        guard maxFailures >= 0 else { throw ValidationError("--max-failures: expected 0 or more") }
    }

    var sizes: [String] { waves.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    func request(_ mode: ModeWord) -> RolloutRequest {
        RolloutRequest(selector: selector, mode: mode, waves: sizes, soakSeconds: TimeText.duration(soak), confirmWindowSeconds: TimeText.duration(confirmWindow),
                       maxFailures: maxFailures)
    }

    static func start(_ fleet: FleetOptions, _ request: RolloutRequest) throws {
        let client = try fleet.client()
        let view = try awaiting { try await client.call(.POST, "/api/v1/rollouts", body: request, timeout: 60, as: RolloutView.self) }
        if fleet.json { return try printJSON(view) }
        print("rollout \(view.id): \(view.mode.rawValue) \(view.selector.terminalSafe), \(view.hosts?.count ?? 0) hosts in \(view.waves.count) waves "
              + "(\(view.waves.map { "\($0.hosts)" }.joined(separator: ", ")))")
        print("follow it with: cordon fleet rollout status \(view.id)")
    }
}

struct FleetRolloutStartCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Start a rollout to enforce (approver role).",
        discussion: """
            Each host applies its effective policy through its own confirm window and confirms it \
            by itself only after an authenticated round trip to the server through the new rules. \
            The next wave starts once every host of the current one confirmed and the soak passed. \
            The rollout halts on a rollback, a host that does not report within its window, more \
            failures than allowed, or a regression: a host rejecting traffic its own record shows \
            it had. On a halt the wave's hosts go back to what they ran before; hosts not reached \
            are untouched. Hosts already in sync are skipped.
            """)

    @OptionGroup var fleet: FleetOptions
    @OptionGroup var rollout: RolloutOptions

    func run() throws { try RolloutOptions.start(fleet, rollout.request(.enforce)) }
}

struct FleetRolloutStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a rollout, or list them.")

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The rollout's id; without it, the latest rollouts.", valueName: "id"))
    var id: String?

    func run() throws {
        let client = try fleet.client()
        guard let id else {
            let page = try awaiting { try await client.call(.GET, "/api/v1/rollouts", timeout: 30, as: Page<RolloutView>.self) }
            if fleet.json { return try printJSON(page) }
            for r in page.items {
                print("\(r.id)  \(r.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(r.mode.rawValue) \(r.selector.terminalSafe)  "
                      + "wave \(r.currentWave)/\(r.waves.count)\(r.haltReason.map { "  halt: \($0.terminalSafe)" } ?? "")")
            }
            return
        }
        let view = try awaiting { try await client.call(.GET, "/api/v1/rollouts/\(FleetClient.queryValue(id))", timeout: 30, as: RolloutView.self) }
        if fleet.json { return try printJSON(view) }
        FleetRolloutStatusCommand.show(view)
    }

    static func show(_ view: RolloutView) {
        print("rollout \(view.id): \(view.state.rawValue), \(view.mode.rawValue) \(view.selector.terminalSafe), by \(view.createdBy.terminalSafe) at \(view.createdAt)")
        if let reason = view.haltReason { print("halt_reason: \(reason.terminalSafe)") }
        print("failures: \(view.failures) (the later waves allow \(view.maxFailures)); soak \(view.soakSeconds) s; confirm within \(view.confirmWindowSeconds) s")
        for wave in view.waves {
            print("wave \(wave.number) (\(wave.size), \(wave.hosts) host\(wave.hosts == 1 ? "" : "s")): \(wave.state)"
                  + (wave.soakUntil.map { ", soaking until \($0)" } ?? ""))
            for host in view.hosts ?? [] where host.wave == wave.number {
                print("  \(host.hostname.terminalSafe.padding(toLength: 24, withPad: " ", startingAt: 0)) \(host.state.rawValue)"
                      + (host.generation.map { " (generation \($0))" } ?? "") + (host.detail.map { ": \($0.terminalSafe)" } ?? ""))
            }
        }
    }
}
