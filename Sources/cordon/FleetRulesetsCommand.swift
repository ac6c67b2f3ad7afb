import ArgumentParser
import CordonCore
import CordonWire

struct FleetRulesetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rulesets", abstract: "List the server's rulesets, their versions and assignments.")

    @OptionGroup var fleet: FleetOptions

    func run() throws {
        let client = try fleet.client()
        let rulesets = try awaiting { try await client.call(.GET, "/api/v1/rulesets", timeout: 60, as: Page<RulesetView>.self).items }
        if fleet.json { return try printJSON(rulesets) }
        guard !rulesets.isEmpty else { return print("no rulesets approved yet") }
        for ruleset in rulesets {
            print("\(ruleset.name):")
            var versions = TextTable(header: ["VERSION", "SHA256", "APPROVED", "BY", "REVIEWED ON", "RISKS ACCEPTED"])
            for v in ruleset.versions {
                versions.add([String(v.version), String(v.sha256.prefix(16)), v.approvedAt, v.approvedBy, "\(v.review.hosts) hosts",
                              String(v.risksAccepted.count)])
            }
            print(versions.text(indent: "  "), terminator: "")
            if ruleset.assignments.isEmpty {
                print("  not assigned")
            } else {
                var assignments = TextTable(header: ["ASSIGNMENT", "VERSION", "SELECTOR", "HOSTS", "BY"])
                for a in ruleset.assignments {
                    assignments.add([a.id, a.version.map(String.init) ?? "latest (\(a.resolvedVersion))", a.selector, String(a.hosts), a.createdBy])
                }
                print(assignments.text(indent: "  "), terminator: "")
            }
        }
    }
}
