import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ApproveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Validate, review and store a ruleset as the new approved version.",
        discussion: """
            Refuses (exit 3) when the review finds a lockout risk, unless --accept-risk is given. \
            Stores the exact file content with its SHA-256, the operator and the time, and writes a \
            decision-log entry either way.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Ruleset file.", valueName: "file"))
    var file: String

    @Option(name: .customLong("operator"), help: ArgumentHelp("Who approves (recorded).", valueName: "name"))
    var operatorName: String

    @Option(help: ArgumentHelp("Why (recorded).", valueName: "text"))
    var reason: String = ""

    @Flag(help: "Approve despite lockout risks (they are recorded as accepted).")
    var acceptRisk = false

    @Flag(name: .customLong("override-server"),
          help: "On a host whose mode the fleet's server sets: approve here anyway (the server's rollouts do not use it).")
    var overrideServer = false

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
    }

    func run() throws {
        let (content, ruleset) = try readRuleset(file)
        let path = global.db ?? AgentConfig.defaultDatabase
        let store: FlowStore
        let review: Review
        do {
            store = try FlowStore(existing: path)
            review = Review(ruleset: ruleset, flows: try store.loadAll(), names: try store.flowNames(), context: HostFacts.reviewContext(store: store))
        } catch {
            throw CLIError.failed("\(error)")
        }
        // The server is the source of truth for a managed host's policy (Docs/decisions.md).
        if !overrideServer, let managed = (try? store.state(FleetLink.managedState)).flatMap({ $0 }), !managed.isEmpty {
            throw CLIError.failed("this host's mode and policy come from its fleet's cordon-server (a rollout reached it): approve the ruleset there "
                                  + "(`cordon fleet approve`), or pass --override-server to approve it here anyway; nothing changed")
        }
        let kinds = review.risks.map(\.kind.rawValue)
        if !review.risks.isEmpty && !acceptRisk {
            try? store.record(action: "approve", operator: operatorName, reason: reason, policy: content,
                              outcome: "refused: lockout risk (\(kinds.joined(separator: ", ")))")
            var message = "refused to approve \(file): lockout risk\n"
            for risk in review.risks { message += "  \(risk.kind.rawValue): \(risk.message)\n" }
            message += "fix the ruleset, or approve with --accept-risk if you are sure"
            FileHandle.standardError.write(Data("cordon: \(message)\n".utf8))
            throw ExitCode(3)
        }
        do {
            let version = try store.approve(content: content, source: file, operator: operatorName, acceptedRisks: kinds, reason: reason)
            print("approved \(file) as version \(version.version) (sha256 \(version.digest)) by \(operatorName)"
                  + (kinds.isEmpty ? "" : "; risks accepted: \(kinds.joined(separator: ", "))"))
        } catch {
            throw CLIError.failed("\(error)")
        }
    }
}
