import ArgumentParser
import CordonCore
import CordonWire

struct FleetReviewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "review",
        abstract: "Simulate a ruleset against each matching host's own record, before anything changes.",
        discussion: """
            For every host the selector (or the file's appliesTo) matches, the server composes the \
            ruleset with what the host's other assignments add and replays the host's uploaded flows \
            of the last --since: the flows it would reject and its lockout risks (SSH it is reached \
            by, DHCP, the resolvers it uses). Exit 3 when any host would lose traffic or has a risk.
            """)

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The ruleset file.", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("The hosts to review it on (default: the file's appliesTo).", valueName: "selector"))
    var selector: String?

    @Option(help: ArgumentHelp("How far back the record counts, e.g. 7d or 12h.", valueName: "span"))
    var since = "7d"

    func validate() throws {
        if let selector { do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") } }
        guard TimeText.duration(since) != nil else { throw ValidationError("--since '\(since)': expected a span such as 7d or 12h") }
    }

    func run() throws {
        let (text, _) = try readRuleset(file)
        let client = try fleet.client()
        let request = ReviewRequest(content: text, selector: selector, since: since)
        let result = try awaiting { try await client.call(.POST, "/api/v1/reviews", body: request, timeout: 120, as: ReviewResult.self) }
        if fleet.json {
            try printJSON(result)
        } else {
            Self.show(result)
        }
        if result.hosts.contains(where: { !$0.clean }) { throw ExitCode(3) }
    }

    static func show(_ result: ReviewResult) {
        let summary = result.summary
        print("\(summary.hosts) host\(summary.hosts == 1 ? "" : "s") match \(result.selector.terminalSafe) (record of the last \(result.since)): "
              + "\(summary.losingTraffic) would lose traffic, \(summary.withRisks) with lockout risks")
        var table = TextTable(header: ["HOST", "FLOWS", "ALLOWED", "REJECTED", "RISKS"])
        for host in result.hosts {
            table.add([host.hostname, String(host.flows), String(host.allowed), String(host.rejectedCount), host.risks.map(\.kind.rawValue).joined(separator: ",")])
        }
        print(table.text, terminator: "")
        for host in result.hosts where !host.clean {
            print("\n\(host.hostname.terminalSafe):")
            for risk in host.risks { print("  RISK \(risk.kind.rawValue): \(risk.message.terminalSafe)") }
            for flow in host.rejected {
                let port = flow.localPort ?? flow.remotePort
                let what = "\(flow.direction.rawValue) \(flow.protocol)\(port.map { "/\($0)" } ?? "") \(flow.remoteAddress)"
                print("  rejected: \(what.terminalSafe) (\(flow.connections) connections, last \(flow.lastSeen))")
            }
            if host.rejectedCount > host.rejected.count { print("  … and \(host.rejectedCount - host.rejected.count) more") }
        }
    }
}
