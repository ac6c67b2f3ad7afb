import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonWire

struct FleetApproveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Approve a ruleset file as the next immutable version of a server ruleset (approver role).",
        discussion: """
            The server reviews it first (as `cordon fleet review`) and stores the version with that \
            review. It is refused while a host has a lockout risk, unless --accept-risk says you have \
            read them; the accepted risks are stored with the version. Nothing reaches a host until \
            the version is assigned and rolled out.
            """)

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The ruleset file.", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("The server ruleset's name (the file's name: field must agree).", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("The hosts to review it on (default: the file's appliesTo).", valueName: "selector"))
    var selector: String?

    @Option(help: ArgumentHelp("How far back the record counts.", valueName: "span"))
    var since = "7d"

    @Flag(name: .customLong("accept-risk"), help: "Approve despite the review's lockout risks.")
    var acceptRisk = false

    func validate() throws {
        if let selector { do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") } }
    }

    func run() throws {
        let (text, _) = try readRuleset(file)
        let client = try fleet.client()
        let request = ApproveRequest(content: text, selector: selector, since: since, acceptRisks: acceptRisk)
        let path = "/api/v1/rulesets/\(FleetClient.queryValue(name))/versions"
        let version = try awaiting { try await client.call(.POST, path, body: request, timeout: 120, as: RulesetVersionView.self) }
        if fleet.json { return try printJSON(version) }
        print("approved \(version.name) version \(version.version) (sha256 \(version.sha256.prefix(16))…), reviewed on \(version.review.hosts) hosts: "
              + "\(version.review.losingTraffic) losing traffic, \(version.risksAccepted.count) risks accepted")
    }
}
