import ArgumentParser
import CordonCore
import CordonWire

struct FleetLogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "A host's decision log as shipped to the server.",
        discussion: "--verify exits 1 when the server found a gap, a broken link or an altered entry."
    )

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The host's id or host name.", valueName: "host"))
    var host: String

    @Flag(help: "Check the chain; exit 1 naming each problem.")
    var verify = false

    func run() throws {
        let client = try fleet.client()
        let name = host
        let log = try awaiting { () async throws -> HostLog in
            let h = try await client.resolveHost(name)
            return try await client.call(.GET, "/api/v1/hosts/\(h.id)/log", timeout: 60, as: HostLog.self)
        }
        if verify {
            guard log.verification.intact else {
                throw CLIError.failed("the shipped decision log has problems:\n" + log.verification.problems.map { "  " + $0 }.joined(separator: "\n"))
            }
            if !fleet.json { return print("decision log intact: \(log.verification.entries) entries, head \(log.entries.last.map { String($0.hash.prefix(16)) } ?? "-")") }
        }
        if fleet.json { return try printJSON(log) }
        guard !log.entries.isEmpty else { return print("no entries shipped yet") }
        var table = TextTable(header: ["SEQ", "TIME", "ACTION", "OPERATOR", "OUTCOME", "REASON"])
        for d in log.entries { table.add([String(d.sequence), TimeText.rfc3339(d.appliedAt), d.action, d.operator, d.outcome, d.reason]) }
        print(table.text, terminator: "")
    }
}
