import ArgumentParser
import CordonAgent
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Ask the running agent for its mode and counters (exit 1 when none answers, or when it is degraded)."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let report: StatusReport
        do {
            report = try ControlClient(path: global.socket ?? AgentConfig.defaultSocket).status()
        } catch {
            throw CLIError.failed("\(error)")
        }
        defer {
            // After the output: automation reads both.
            if report.unrecorded {
                FileHandle.standardError.write(Data("cordon: WARNING: the state in force is not recorded in the database yet (a write failed); the agent retries\n".utf8))
            }
            if report.degraded {
                FileHandle.standardError.write(Data("cordon: degraded: the guard could not restore Cordon's tables; see `cordon log`\n".utf8))
                Glibc.exit(1)
            }
        }
        if json {
            try printJSON(report)
            return
        }
        var lines: [(String, String)] = [
            ("mode", "\(report.mode)\(report.isolated ? " (ISOLATED)" : "")\(report.releasing ? " (releasing: checking the collectors)" : "")"),
            ("flows", "\(report.flows) aggregates"),
            ("events", "\(report.events) read, \(report.ignoredEvents) ignored (loopback)"),
            ("lost events", "\(report.lostEvents) overruns, \(report.resyncs) re-syncs, \(report.recoveredConnections) connections recovered"),
            ("last flush", "\(report.lastFlush ?? "not yet")\(report.flushErrors > 0 ? " (\(report.flushErrors) failed)" : "")"),
            ("database", report.database),
            ("ruleset", "\(report.ruleset.map { "version \($0.version) (sha256 \($0.digest.prefix(16))…) in force" } ?? "none in force")\(report.confirmDeadline.map { ", rolls back at \($0) unless confirmed" } ?? "")"),
            ("approved", report.approved.map { "version \($0.version) (sha256 \($0.digest.prefix(16))…), approved \($0.approvedAt) by \($0.operator)" } ?? "none approved"),
            ("management", report.management),
            ("rejected", "\(report.rejectedInbound) inbound, \(report.rejectedOutbound) outbound packets\(report.lostLogMessages > 0 ? " (\(report.lostLogMessages) log overruns)" : "")"),
            ("guard", "\(report.guardRestores) restores, \(report.guardEscalations) escalations\(report.degraded ? " — DEGRADED" : "")"),
            ("backend", report.backend),
            ("agent", "pid \(report.pid), started \(report.startedAt)"),
        ]
        if let fleet = report.fleet {
            let state = fleet.revoked ? "REVOKED: this host's credential was revoked by the server; not reporting"
                : fleet.connected ? "connected" : "not connected\(fleet.lastError.map { " (\($0))" } ?? "")"
            lines.append(("server", "\(fleet.server) as host \(fleet.hostID ?? "(not enrolled yet)"): \(state)"))
            lines.append(("fleet", "generation \(fleet.appliedGeneration) applied, last contact \(fleet.lastContact ?? "never"), \(fleet.unsentLogEntries) log entries not yet sent"))
        }
        // The server's error text, a ruleset's version and an approver's name come from elsewhere:
        // one line each, whatever they hold.
        for (label, value) in lines { print((label + ":").padding(toLength: 15, withPad: " ", startingAt: 0) + value.terminalSafe) }
    }
}
