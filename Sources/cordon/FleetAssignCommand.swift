import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonWire

struct FleetAssignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "assign",
        abstract: "Bind a ruleset (NAME for the latest approved version, NAME@VERSION for one) to a selector (approver role).",
        discussion: """
            The hosts it matches get its rules in their effective policy (the union of their \
            assignments). Nothing changes on an enforcing host until a rollout: its sync is pending. \
            A selector that matches no host is refused. --dry-run shows which hosts it would match.
            """)

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("NAME or NAME@VERSION.", valueName: "ruleset"))
    var ruleset: String

    @Option(help: ArgumentHelp("The hosts it is for.", valueName: "selector"))
    var selector: String

    @Flag(name: .customLong("dry-run"), help: "Show the hosts the selector matches now; change nothing.")
    var dryRun = false

    var parts: (name: String, version: Int64?)? {
        let pieces = ruleset.split(separator: "@", maxSplits: 1).map(String.init)
        guard let name = pieces.first, !name.isEmpty else { return nil }
        if pieces.count == 1 { return (name, nil) }
        guard let version = Int64(pieces[1]), version > 0 else { return nil }
        return (name, version)
    }

    func validate() throws {
        guard parts != nil else { throw ValidationError("'\(ruleset)': expected NAME or NAME@VERSION") }
        do { _ = try Selector(parsing: selector) } catch { throw ValidationError("--selector: \(error)") }
    }

    func run() throws {
        let client = try fleet.client()
        let (name, version) = parts!
        if dryRun {
            let path = "/api/v1/selectors/preview?selector=" + FleetClient.queryValue(selector)
            let preview = try awaiting { try await client.call(.GET, path, timeout: 30, as: SelectorPreview.self) }
            if fleet.json { return try printJSON(preview) }
            print("\(name)\(version.map { "@\($0)" } ?? "") to \(preview.selector.terminalSafe): matches \(preview.matches) host\(preview.matches == 1 ? "" : "s")"
                  + (preview.matches == 0 ? " (refused: a selector must match a host)" : ""))
            for host in preview.hosts { print("  \(host.hostname.terminalSafe) (\(host.id))") }
            if preview.matches > preview.hosts.count { print("  … and \(preview.matches - preview.hosts.count) more") }
            if preview.matches == 0 { throw ExitCode(1) }
            return
        }
        let request = AssignmentRequest(ruleset: name, version: version, selector: selector)
        let view = try awaiting { try await client.call(.POST, "/api/v1/assignments", body: request, timeout: 60, as: AssignmentView.self) }
        if fleet.json { return try printJSON(view) }
        print("assignment \(view.id): \(view.ruleset)@\(view.version.map(String.init) ?? "latest (now \(view.resolvedVersion))") to "
              + "\(view.selector.terminalSafe), \(view.hosts) host\(view.hosts == 1 ? "" : "s"); enforcing hosts change only through a rollout")
    }
}

struct FleetUnassignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unassign", abstract: "Remove an assignment (approver role).")

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The assignment's id.", valueName: "id"))
    var id: String

    func run() throws {
        let client = try fleet.client()
        let path = "/api/v1/assignments/\(FleetClient.queryValue(id))"
        _ = try awaiting { try await client.raw(.DELETE, path, timeout: 60) }
        if fleet.json { return try printJSON(["removed": id]) }
        print("assignment \(id) removed; enforcing hosts change only through a rollout")
    }
}
