import ArgumentParser
import CordonAgent

struct DiscoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "discover",
        abstract: "Return the host to discovery: nothing blocked, flows recorded (through the agent).",
        discussion: "One atomic transaction replaces the enforced rules with discovery's accept-all table."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(name: .customLong("override-server"),
          help: "On a host whose mode the fleet's server sets: do it anyway (logged; the server shows the host in drift).")
    var overrideServer = false

    @Option(name: .customLong("operator"), help: ArgumentHelp("Who does it (recorded in the decision log).", valueName: "name"))
    var operatorName: String

    @Option(help: ArgumentHelp("Why (recorded in the decision log).", valueName: "text"))
    var reason: String = "return to discovery"

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
    }

    func run() throws {
        try sendToAgent(global, .discover(operator: operatorName, reason: reason), overrideServer: overrideServer)
    }
}
