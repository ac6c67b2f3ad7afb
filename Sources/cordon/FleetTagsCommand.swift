import ArgumentParser
import CordonCore
import CordonWire

struct FleetTagsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tags",
        abstract: "Set or unset a host's tags as an administrator (audited); without --set or --unset, show them.",
        discussion: """
            An administrator's tag wins over the enrollment secret's and the host's own, and is shown \
            as `admin`; --unset takes a tag away whatever set it. Selectors see the result at once.
            """)

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The host's id or host name.", valueName: "host"))
    var host: String

    @Option(help: ArgumentHelp("Tags to set, e.g. role=web,env=prod.", valueName: "k=v,..."))
    var set: String?

    @Option(help: ArgumentHelp("A tag key to take away (repeatable, or comma-separated).", valueName: "key"))
    var unset: [String] = []

    func validate() throws {
        if let set { do { _ = try Tags.parse(set) } catch { throw ValidationError("--set: \(error)") } }
        for key in keys where !Tags.validKey(key) { throw ValidationError("--unset '\(key)': expected a tag key (letters, digits, '-', '_', '.', '/')") }
    }

    private var keys: [String] { unset.flatMap { $0.split(separator: ",").map(String.init) } }

    func run() throws {
        let client = try fleet.client()
        let name = host
        let change = TagChange(set: try set.map(Tags.parse) ?? [:], unset: keys)
        let changing = !change.set.isEmpty || !change.unset.isEmpty
        let h = try awaiting { () async throws -> HostView in
            let h = try await client.resolveHost(name)
            guard changing else { return h }
            return try await client.call(.PATCH, "/api/v1/hosts/\(h.id)/tags", body: change, timeout: 30, as: HostView.self)
        }
        if fleet.json { return try printJSON(h) }
        var table = TextTable(header: ["TAG", "VALUE", "SET BY"])
        for (key, value) in h.tags.sorted(by: { $0.key < $1.key }) { table.add([key, value, h.tagSources[key] ?? "-"]) }
        print("\(h.hostname.terminalSafe) (\(h.id)):")
        print(h.tags.isEmpty ? "no tags" : table.text, terminator: h.tags.isEmpty ? "\n" : "")
    }
}
