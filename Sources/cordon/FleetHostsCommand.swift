import ArgumentParser
import CordonCore
import CordonWire

struct FleetHostsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts", abstract: "List the enrolled hosts, or those a selector matches now.",
        discussion: """
            --selector takes an expression over tags, e.g. 'role == "web" && env in {"prod","staging"}' \
            (Docs/rulesets.md, Selectors); it is checked here first, the error naming the column.
            """)

    @OptionGroup var fleet: FleetOptions

    @Option(help: ArgumentHelp("Only the hosts this selector matches (not revoked).", valueName: "selector"))
    var selector: String?

    func validate() throws {
        if let selector { do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") } }
    }

    func run() throws {
        let client = try fleet.client()
        let selector = self.selector
        let hosts = try awaiting { try await client.hosts(selector: selector).items }
        if fleet.json { return try printJSON(hosts) }
        if let selector {
            let canonical = (try? Selector(parsing: selector))?.description ?? selector
            print("selector \(canonical.terminalSafe) matches \(hosts.count) host\(hosts.count == 1 ? "" : "s")")
            if hosts.isEmpty { return }
        }
        guard !hosts.isEmpty else { return print("no hosts enrolled") }
        var table = TextTable(header: ["ID", "HOSTNAME", "CONNECTED", "MODE", "SYNC", "ISOLATION", "LAST SEEN", "FLAGS", "TAGS"])
        for h in hosts {
            let isolation = h.isolation.pendingSince != nil ? "\(h.isolation.desired.rawValue) (pending)" : (h.isolation.observed ?? h.isolation.desired).rawValue
            // A tag the host gave itself is marked: only the secret's (and an admin's) were chosen by an administrator.
            table.add([h.id, h.hostname, h.revoked ? "revoked" : h.connected ? "yes" : "no", h.mode ?? "-", h.policy.sync, isolation, h.lastSeen ?? "never",
                       h.duplicateMachineID ? "DUPLICATE-MACHINE-ID" : "-",
                       h.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" + (h.tagSources[$0.key] == "host" ? "(host)" : "") }.joined(separator: ",")])
        }
        print(table.text, terminator: "")
    }
}
