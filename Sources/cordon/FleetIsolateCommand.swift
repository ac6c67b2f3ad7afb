import ArgumentParser
import CordonFleetClient
import CordonWire
import Foundation

struct FleetIsolateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "isolate",
        abstract: "Isolate a host: only its management channel (the server, DNS) stays open.",
        discussion: "Waits up to --wait seconds for the agent to confirm; an offline host is isolated when it comes back, unless released before."
    )

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The host's id or host name.", valueName: "host"))
    var host: String

    @Option(help: "Why: recorded with the intent and in the host's decision log.")
    var reason: String

    @Option(name: .customLong("external-id"), help: ArgumentHelp("A ticket or case id to record with it.", valueName: "id"))
    var externalID: String?

    @Option(help: ArgumentHelp("Seconds to wait for the agent's confirmation (0: do not wait).", valueName: "seconds"))
    var wait: Double = 10

    func run() throws {
        try FleetIntentRequest.send(fleet, host: host, IsolationRequest(state: .isolated, reason: reason, externalID: externalID), wait: wait)
    }
}

/// `isolate` and `release`: one intent, then its outcome.
enum FleetIntentRequest {
    static func send(_ fleet: FleetOptions, host: String, _ body: IsolationRequest, wait: Double) throws {
        let client = try fleet.client()
        let key = UUID().uuidString
        let intent = try awaiting { () async throws -> IntentView in
            let h = try await client.resolveHost(host)
            // One key per invocation: a retry of this call after a lost answer is not a second intent.
            let accepted = try await client.call(.POST, "/api/v1/hosts/\(h.id)/isolation", body: body, headers: [("Idempotency-Key", key)],
                                                 timeout: 15, as: IntentAccepted.self)
            let deadline = Date().addingTimeInterval(wait)
            var intent = try await client.call(.GET, "/api/v1/intents/\(accepted.intentID)", timeout: 15, as: IntentView.self)
            while intent.status == .pending && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                intent = try await client.call(.GET, "/api/v1/intents/\(accepted.intentID)", timeout: 15, as: IntentView.self)
            }
            return intent
        }
        if fleet.json { return try printJSON(intent) }
        switch intent.status {
        case .succeeded: print("\(body.state.rawValue): intent \(intent.id) succeeded (generation \(intent.generation))")
        case .pending: print("intent \(intent.id) is pending (generation \(intent.generation)): the host has not applied it yet; it will when it connects")
        case .failed: throw CLIError.failed("intent \(intent.id) failed: \(intent.error ?? "no reason given")")
        case .superseded: throw CLIError.failed("intent \(intent.id) was superseded: \(intent.error ?? "")")
        }
    }
}
