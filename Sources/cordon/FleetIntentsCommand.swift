import ArgumentParser
import CordonCore
import CordonWire

struct FleetIntentsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "intents", abstract: "List isolation intents and how they ended.")

    @OptionGroup var fleet: FleetOptions

    @Option(help: ArgumentHelp("Only this host's (id or host name).", valueName: "host"))
    var host: String?

    @Option(help: ArgumentHelp("pending, succeeded, failed or superseded.", valueName: "status"))
    var status: String?

    func validate() throws {
        if let status, IntentStatus(rawValue: status) == nil { throw ValidationError("--status '\(status)': expected pending, succeeded, failed or superseded") }
    }

    func run() throws {
        let client = try fleet.client()
        let (host, status) = (self.host, self.status)
        let intents = try awaiting { () async throws -> [IntentView] in
            var query: [String] = []
            if let host { query.append("host_id=\(try await client.resolveHost(host).id)") }
            if let status { query.append("status=\(status)") }
            return try await client.call(.GET, "/api/v1/intents" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")), timeout: 30,
                                         as: Page<IntentView>.self).items
        }
        if fleet.json { return try printJSON(intents) }
        guard !intents.isEmpty else { return print("no intents") }
        var table = TextTable(header: ["ID", "HOST", "STATE", "GEN", "STATUS", "REQUESTED", "BY", "REASON", "ERROR"])
        for i in intents {
            table.add([i.id, i.hostID, i.state, String(i.generation), i.status.rawValue, i.requestedAt, i.requester, i.reason, i.error ?? ""])
        }
        print(table.text, terminator: "")
    }
}
