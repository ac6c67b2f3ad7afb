import ArgumentParser
import CordonAgent
import CordonCore
import Foundation

struct EnforceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enforce",
        abstract: "Switch the host to default-reject with the latest approved ruleset (through the agent).",
        discussion: """
            One atomic nftables transaction. The agent then connects to every collector through the new \
            rules and rolls back at once if one fails; unless `cordon confirm` comes within the window it \
            rolls back by itself, to the last confirmed state (discovery the first time). Running it again \
            after approving a new version swaps the rules in one transaction. Exit 1 when nothing was \
            enforced (the reason is printed), 0 when the rules are in force awaiting confirmation.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(name: .customLong("override-server"),
          help: "On a host whose mode the fleet's server sets: do it anyway (logged; the server shows the host in drift).")
    var overrideServer = false

    @Option(name: .customLong("operator"), help: ArgumentHelp("Who enforces (recorded in the decision log).", valueName: "name"))
    var operatorName: String

    @Option(help: ArgumentHelp("Seconds before an unconfirmed enforcement rolls back (default 120).", valueName: "seconds"))
    var confirmWithin: Int64 = 120

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
        guard Engine.confirmRange.contains(confirmWithin) else {
            throw ValidationError("--confirm-within must be between \(Engine.confirmRange.lowerBound) and \(Engine.confirmRange.upperBound) seconds")
        }
    }

    func run() throws {
        try sendToAgent(global, .enforce(operator: operatorName, confirmWithin: confirmWithin), overrideServer: overrideServer)
    }
}

/// Sends a command that changes the firewall and prints the agent's answer; exit 1 when it
/// refused or failed. There is no fallback without an agent: only the agent can keep the promise
/// of a rollback at the deadline.
func sendToAgent(_ global: GlobalOptions, _ command: ControlCommand, overrideServer: Bool = false) throws {
    let answer: ControlAnswer
    let timeout = 60
    do {
        answer = try ControlClient(path: global.socket ?? AgentConfig.defaultSocket).command(command, overrideServer: overrideServer, timeoutSeconds: timeout)
    } catch AgentError.noAnswer(let socket, let reason) {
        throw CLIError.failed("the agent on \(socket) took `\(command.name)` but \(reason): its outcome is unknown; check `cordon status`")
    } catch AgentError.notRunning(let socket, let reason) {
        throw CLIError.failed("no agent answers on \(socket) (\(reason)); `cordon \(command.name)` needs the running agent")
    } catch {
        throw CLIError.failed("\(error)")
    }
    guard answer.ok else { throw CLIError.failed(answer.message) }
    print(answer.message)
}
