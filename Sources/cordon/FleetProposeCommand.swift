import ArgumentParser
import CordonAgent
import CordonCore
import CordonWire
import Foundation

struct FleetProposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propose",
        abstract: "Propose one ruleset for the hosts a selector matches, from their merged record.",
        discussion: """
            First the standard networks (from this machine's standard networks file), then what is \
            left, by address or by name, each with how many of the hosts it was seen on. Candidates \
            seen on fewer than --min-coverage percent of the hosts are listed apart, per host, as \
            outliers. Flows to other enrolled hosts are named by the tags those hosts share.
            """)

    @OptionGroup var fleet: FleetOptions

    @Option(help: ArgumentHelp("The tier, e.g. 'role == \"web\"'.", valueName: "selector"))
    var selector: String

    @Option(help: ArgumentHelp("How far back the record counts.", valueName: "span"))
    var since = "7d"

    @Option(name: .customLong("min-coverage"), help: ArgumentHelp("Percent of the hosts a candidate must be seen on to be the tier's.", valueName: "percent"))
    var minCoverage = 50

    @Option(help: ArgumentHelp("Write the ruleset here (it is not printed).", valueName: "file"))
    var out: String

    @Option(help: ArgumentHelp("Standard networks file (default: installed copy or the source tree's Rulesets/).", valueName: "file"))
    var networks: String?

    func validate() throws {
        do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") }
        guard TimeText.duration(since) != nil else { throw ValidationError("--since '\(since)': expected a span such as 7d or 12h") }
        guard (1...100).contains(minCoverage) else { throw ValidationError("--min-coverage: expected a percentage from 1 to 100") }
    }

    func run() throws {
        guard let path = StandardNetworks.locate(explicit: networks), let standard = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CLIError.invalid("standard networks not found; pass --networks FILE")
        }
        let client = try fleet.client()
        let request = ProposalRequest(selector: selector, since: since, minCoverage: minCoverage, standardNetworks: standard)
        let result = try awaiting { try await client.call(.POST, "/api/v1/proposals", body: request, timeout: 120, as: ProposalResult.self) }
        do { try result.text.write(toFile: out, atomically: true, encoding: .utf8) } catch {
            throw CLIError.failed("cannot write \(out): \(error.localizedDescription)")
        }
        if fleet.json { return try printJSON(result) }
        print("wrote \(out): \(result.hosts) host\(result.hosts == 1 ? "" : "s"), \(result.flows) flow aggregates, "
              + "\(result.candidates) candidate\(result.candidates == 1 ? "" : "s") for the tier, \(result.outliers) outlier\(result.outliers == 1 ? "" : "s")")
    }
}
