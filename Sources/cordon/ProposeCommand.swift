import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore
import Foundation

struct ProposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propose",
        abstract: "Write a ruleset proposal from the recorded flows (no agent needed).",
        discussion: """
            One network and rule per standard network actually used, narrowed to the servers seen \
            where that is safe; every other flow group as a commented-out candidate. The same data \
            always gives the same file. See Docs/rulesets.md.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Write the ruleset here instead of standard output.", valueName: "file"))
    var out: String?

    @Option(help: ArgumentHelp("Standard networks file (default: installed copy or the source tree's Rulesets/).",
                               valueName: "file"))
    var networks: String?

    func run() throws {
        let standard: Ruleset
        do { standard = try StandardNetworks.load(explicit: networks) } catch let error as RulesetError {
            throw CLIError.invalid(error.description)
        }
        let flows: [(key: FlowKey, stats: FlowStats)]
        let lookedUp: [FlowKey: [String]]
        do {
            let store = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase)
            flows = try store.loadAll()
            lookedUp = try store.flowNames(queriedOnly: true)
        } catch {
            throw CLIError.failed("\(error)")
        }
        let names = ServiceNames.system()
        let proposal = Proposer(standard: standard, serviceNames: names).propose(flows, names: lookedUp)
        let text = ProposalText.render(proposal, names: names, flowCount: flows.count,
                                       firstSeen: flows.map(\.stats.firstSeen).min(), lastSeen: flows.map(\.stats.lastSeen).max())
        // The file must be one `review` and `approve` accept; anything else is a bug here.
        do { _ = try RulesetParser.parse(text, file: out ?? "(proposal)") } catch {
            throw CLIError.failed("internal error, the proposal does not validate: \(error)")
        }
        guard let out else {
            print(text, terminator: "")
            return
        }
        do {
            try text.write(toFile: out, atomically: true, encoding: .utf8)
        } catch {
            throw CLIError.failed("cannot write \(out): \(error.localizedDescription)")
        }
        let candidates = proposal.candidates.filter { $0.direction != .forward }.count
        let networks = proposal.ruleset.networks.count
        print("wrote \(out): \(networks) standard network\(networks == 1 ? "" : "s"), "
              + "\(candidates) Somewhere candidate\(candidates == 1 ? "" : "s") to decide on")
    }
}
