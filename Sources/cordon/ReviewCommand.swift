import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ReviewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "review",
        abstract: "Simulate a ruleset against every recorded flow and list lockout risks.",
        discussion: """
            Shows, per rule, the flows it allows; the flows enforcement would reject; and lockout \
            risks: SSH (recorded, or open now) not allowed, DHCP in use but not allowed, the \
            configured resolvers not allowed, the metadata endpoint used but not allowed. \
            Exit 0 when there is no risk, 3 when there is, 2 for an invalid ruleset.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Ruleset file.", valueName: "file"))
    var file: String

    @Flag(help: "Print JSON: allowed (flows with the rule), rejected, forwarded, risks.")
    var json = false

    @Flag(help: "Walk the rejected flow groups one by one (needs a terminal) and write the resulting ruleset.")
    var interactive = false

    @Option(help: ArgumentHelp("With --interactive: where to write (default FILE with .reviewed before .yaml).", valueName: "file"))
    var out: String?

    func validate() throws {
        if interactive && json { throw ValidationError("--interactive and --json exclude each other") }
        if out != nil && !interactive { throw ValidationError("--out is for --interactive") }
    }

    func run() throws {
        let ruleset = try loadRuleset(file)
        let flows: [(key: FlowKey, stats: FlowStats)]
        let store: FlowStore
        let names: [FlowKey: [String]]
        do {
            store = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase)
            flows = try store.loadAll()
            names = try store.flowNames()
        } catch {
            throw CLIError.failed("\(error)")
        }
        let review = Review(ruleset: ruleset, flows: flows, names: names, context: HostFacts.reviewContext(store: store))
        if interactive {
            guard isatty(0) == 1 else { throw CLIError.invalid("--interactive needs a terminal on standard input") }
            let queried: [FlowKey: [String]]
            do { queried = try store.flowNames(queriedOnly: true) } catch { throw CLIError.failed("\(error)") }
            return try walk(review, ruleset: ruleset, flows: flows, names: queried)
        }
        if json {
            try ReviewReport(review).write()
        } else {
            print(text(review, ruleset: ruleset), terminator: "")
        }
        if !review.risks.isEmpty { throw ExitCode(3) }
    }

    /// The learn-then-enforce loop: each leftover group, its flows, and a decision.
    private func walk(_ review: Review, ruleset: Ruleset, flows: [(key: FlowKey, stats: FlowStats)], names lookedUp: [FlowKey: [String]]) throws {
        let names = ServiceNames.system()
        let candidates = Leftovers.candidates(review, names: lookedUp)
        var result = ruleset
        var decided = 0
        print("\(candidates.count) flow group\(candidates.count == 1 ? "" : "s") would be rejected by \(file).")
        loop: for (index, candidate) in candidates.enumerated() {
            print("\n[\(index + 1)/\(candidates.count)] \(ProposalText.summary(candidate, names: names, listed: 8))")
            let rows = review.rejected.filter { $0.key.direction == candidate.direction && $0.key.transport == candidate.transport
                && $0.key.service == candidate.service }.prefix(10)
            print(FlowRecord.table(rows.map { review.record($0.key, $0.stats) }, indent: "    "), terminator: "")
            while true {
                print("allow [n]arrowed to these addresses, allow from [a]nywhere, [s]kip, [q]uit? ", terminator: "")
                guard let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() else { break loop }
                switch answer {
                case "n": Leftovers.allow(candidate, narrowed: true, in: &result, names: names); decided += 1
                case "a": Leftovers.allow(candidate, narrowed: false, in: &result, names: names); decided += 1
                case "s": break
                case "q": break loop
                default: continue
                }
                break
            }
        }
        let destination = out ?? (file.hasSuffix(".yaml") ? String(file.dropLast(5)) + ".reviewed.yaml" : file + ".reviewed")
        let text = RulesetText.render(result, header: ["Reviewed with `cordon review --interactive` from \(file); \(decided) group(s) allowed."])
        _ = try RulesetParser.parse(text, file: destination)
        do {
            try text.write(toFile: destination, atomically: true, encoding: .utf8)
        } catch {
            throw CLIError.failed("cannot write \(destination): \(error.localizedDescription)")
        }
        print("\nwrote \(destination): \(decided) group\(decided == 1 ? "" : "s") allowed; review or approve it next.")
    }

    private func text(_ review: Review, ruleset: Ruleset) -> String {
        var lines = ["ruleset \(file): \(ruleset.networks.count) networks, \(ruleset.incoming.count) incoming and \(ruleset.outgoing.count) outgoing rules"]
        func connections<S: Sequence>(_ stats: S) -> UInt64 where S.Element == FlowStats { stats.reduce(0) { $0 + $1.connections } }
        lines.append("")
        lines.append("allowed: \(review.allowed.count) flows, \(connections(review.allowed.map(\.stats))) connections")
        let byRule = Dictionary(grouping: review.allowed, by: \.rule)
        for rule in byRule.keys.sorted() {
            let flows = byRule[rule]!
            lines.append("  \(rule)\(String(repeating: " ", count: max(1, 32 - rule.count)))\(flows.count) flows, \(connections(flows.map(\.stats))) connections")
        }
        let unused = (ruleset.incoming.map { "incoming:\($0.network)" } + ruleset.outgoing.map { "outgoing:\($0.network)" })
            .filter { byRule[$0] == nil }
        if !unused.isEmpty { lines.append("  allowing no recorded flow: \(unused.joined(separator: ", "))") }
        lines.append("")
        lines.append("rejected: \(review.rejected.count) flows, \(connections(review.rejected.map(\.stats))) connections")
        if !review.rejected.isEmpty {
            var table = FlowRecord.table(review.rejected.map { review.record($0.key, $0.stats) }, indent: "  ")
            table.removeLast()
            lines.append(table)
        }
        if !review.forwarded.isEmpty {
            lines.append("")
            lines.append("forwarded (not governed by a host ruleset): \(review.forwarded.count) flows")
        }
        lines.append("")
        if review.risks.isEmpty {
            lines.append("risks: none found")
        } else {
            lines.append("LOCKOUT RISKS:")
            for risk in review.risks { lines.append("  \(risk.kind.rawValue): \(risk.message)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Reads and validates a ruleset file; any problem is exit 2 with its location.
func loadRuleset(_ path: String) throws -> Ruleset { try readRuleset(path).ruleset }

/// The file's bytes as read once, with the ruleset parsed from exactly those bytes: what is
/// stored is then what was reviewed, even if the file changes meanwhile.
func readRuleset(_ path: String) throws -> (text: String, ruleset: Ruleset) {
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw CLIError.invalid("\(path): cannot read: \(error.localizedDescription)")
    }
    do {
        return (text, try RulesetParser.parse(text, file: path))
    } catch let error as RulesetError {
        throw CLIError.invalid(error.description)
    }
}

/// `review --json`: one object, written element by element so that a review of a large record
/// does not hold its whole JSON text in memory.
struct ReviewReport: Encodable {
    struct AllowedFlow: Encodable, FastJSON {
        var json: String { flow.json(extra: [("rule", JSONText.quoted(rule))]) }
        let flow: FlowRecord
        let rule: String
        enum Keys: String, CodingKey { case rule }
        func encode(to encoder: any Encoder) throws {
            try flow.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(rule, forKey: .rule)
        }
    }

    let allowed: [AllowedFlow]
    let rejected: [FlowRecord]
    let forwarded: [FlowRecord]
    let risks: [Review.Risk]

    init(_ review: Review) {
        allowed = review.allowed.map { AllowedFlow(flow: review.record($0.key, $0.stats), rule: $0.rule) }
        rejected = review.rejected.map { review.record($0.key, $0.stats) }
        forwarded = review.forwarded.map { review.record($0.key, $0.stats) }
        risks = review.risks
    }

    func write() throws {
        let separator = { FileHandle.standardOutput.write(Data(",\n".utf8)) }
        FileHandle.standardOutput.write(Data("{\n".utf8))
        try printJSONArray(allowed, key: "allowed")
        separator()
        try printJSONArray(rejected, key: "rejected")
        separator()
        try printJSONArray(forwarded, key: "forwarded")
        separator()
        try printJSONArray(risks, key: "risks")
        FileHandle.standardOutput.write(Data("\n}\n".utf8))
    }
}
