import ArgumentParser
import CordonCore
import CordonWire

struct FleetHostsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hosts", abstract: "List the enrolled hosts.")

    @OptionGroup var fleet: FleetOptions

    func run() throws {
        let client = try fleet.client()
        let hosts = try awaiting { try await client.call(.GET, "/api/v1/hosts", timeout: 30, as: Page<HostView>.self).items }
        if fleet.json { return try printJSON(hosts) }
        guard !hosts.isEmpty else { return print("no hosts enrolled") }
        var table = TextTable(header: ["ID", "HOSTNAME", "CONNECTED", "MODE", "ISOLATION", "LAST SEEN", "FLAGS", "TAGS"])
        for h in hosts {
            let isolation = h.isolation.pendingSince != nil ? "\(h.isolation.desired.rawValue) (pending)" : (h.isolation.observed ?? h.isolation.desired).rawValue
            // A tag the host gave itself is marked: only the secret's (and an admin's) were chosen by an administrator.
            table.add([h.id, h.hostname, h.revoked ? "revoked" : h.connected ? "yes" : "no", h.mode ?? "-", isolation, h.lastSeen ?? "never",
                       h.duplicateMachineID ? "DUPLICATE-MACHINE-ID" : "-",
                       h.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" + (h.tagSources[$0.key] == "host" ? "(host)" : "") }.joined(separator: ",")])
        }
        print(table.text, terminator: "")
    }
}
