import ArgumentParser
import CordonCore
import CordonWire
import Foundation

struct FleetShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one host: its state, isolation and counters.")

    @OptionGroup var fleet: FleetOptions

    @Argument(help: ArgumentHelp("The host's id or host name.", valueName: "host"))
    var host: String

    func run() throws {
        let client = try fleet.client()
        let name = host
        let h = try awaiting { try await client.resolveHost(name) }
        if fleet.json { return try printJSON(h) }
        // Each value on its own line, made terminal-safe: every one of them but the counters came from the host.
        let lines: [(String, String)] = [
            ("host", "\(h.hostname) (\(h.id))\(h.revoked ? " — REVOKED" : "")"),
            ("connected", "\(h.connected ? "yes" : "no"), last seen \(h.lastSeen ?? "never")"),
            ("mode", "\(h.mode ?? "not reported")\(h.ruleset.map { ", ruleset version \($0.version)" } ?? "")"),
            ("isolation", h.isolation.summary),
            ("addresses", h.addresses.joined(separator: ", ")),
            ("tags", h.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" + (h.tagSources[$0.key].map { " (\($0))" } ?? "") }
                .joined(separator: ", ")),
            ("agent", "\(h.agentVersion), enrolled \(h.enrolledAt), machine id \(h.machineID)"
                + (h.duplicateMachineID ? " — ANOTHER HOST HAS THIS MACHINE ID (an impostor, or a cloned image)" : "")),
            ("policy", "\(h.policy.sync)" + (h.policy.error.map { ": \($0)" } ?? "")
                + ", desired \(h.policy.desiredDigest.map { String($0.prefix(12)) } ?? "none"), in force \(h.policy.inForceDigest.map { String($0.prefix(12)) } ?? "none")"
                + (h.policy.assigned.map { ", assigned \($0.digest.prefix(12))" } ?? "")),
            ("counters", "\(h.lostEvents) lost events, \(h.guardRestores) guard restores\(h.lastGuardRestore.map { " (last \($0))" } ?? ""), "
                + "\(h.guardEscalations) escalations"),
            ("log", h.logProblems == 0 ? "chain intact" : "\(h.logProblems) PROBLEMS (cordon fleet log --verify)"),
        ]
        for (label, value) in lines + (h.guardHint.map { [("WARNING", $0)] } ?? []) {
            print((label + ":").padding(toLength: 15, withPad: " ", startingAt: 0) + value.terminalSafe)
        }
    }
}
