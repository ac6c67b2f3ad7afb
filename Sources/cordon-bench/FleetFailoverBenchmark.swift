import ArgumentParser
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Issue 22's failover figure: from the primary killed (kill -9) to the first remote isolation
/// done, with the standby promoted by a command (`pg_ctl promote`) and the service address
/// moved at once. A promoter's detection time (Patroni's TTL, pg_auto_failover's health checks)
/// comes on top and is not measured: it is the promoter's setting, not Cordon's.
struct FleetFailoverBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-failover",
                                                    abstract: "Seconds from a primary's kill -9 to a remote isolation done on the promoted standby (needs root and PostgreSQL).")

    @Option(help: "Failovers, each on a new primary and standby.") var runs: Int = 5

    func run() throws {
        guard (1...50).contains(runs) else { throw ValidationError("--runs: 1 to 50") }
        say("# cordon-bench fleet-failover --runs \(runs)")
        say("| run | way back | database back (s) | first 202 (s) | isolation done (s) |")
        say("|---|---|---|---|---|")
        var rows: [Bool: [(Double, Double, Double)]] = [:]
        for run in 1...runs {
            // Beside it, what a site without a standby does: start the killed primary again (crash
            // recovery), with the database on the same machine's disk.
            for promote in [true, false] {
                let row = try once(promote: promote)
                rows[promote, default: []].append(row)
                say("| \(run) | \(promote ? "standby promoted" : "primary restarted") | \(format(row.0, 2)) | \(format(row.1, 2)) | \(format(row.2, 2)) |")
            }
        }
        for promote in [true, false] {
            let r = rows[promote]!
            say("| median | \(promote ? "standby promoted" : "primary restarted") | \(format(median(r.map(\.0)), 2)) | \(format(median(r.map(\.1)), 2)) | \(format(median(r.map(\.2)), 2)) |")
        }
        say("# goal: isolation done under 15 s after the kill, with the promotion done by a command")
    }

    /// One kill -9 of the primary, then the standby promoted (or the primary started again):
    /// seconds after the kill to the database back, to the first accepted request, to the
    /// agent's confirmation.
    func once(promote: Bool) throws -> (Double, Double, Double) {
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try FleetScenario(lab: lab, replicated: true)
        _ = try fleet.startServer()
        let token = try fleet.token(role: "responder", name: "bench")
        let host = try FleetOutageBenchmark.agentA(fleet, token: token)

        let killed = monotonic()
        if promote {
            try fleet.failover()
        } else {
            fleet.postgres.crash()
            try fleet.postgres.start()
        }
        let promoted = monotonic() - killed
        var intent: String?
        while intent == nil && monotonic() - killed < 120 {
            let answer = try fleet.api("POST", "/api/v1/hosts/\(host)/isolation", token: token, body: #"{"state":"isolated","reason":"failover bench"}"#)
            if answer.status == 202 {
                intent = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["intent_id"] as? String
            } else {
                usleep(50_000)
            }
        }
        guard let intent else { throw ValidationError("no isolation accepted within 120 s of the kill") }
        let accepted = monotonic() - killed
        while monotonic() - killed < 180 {
            let answer = try fleet.api("GET", "/api/v1/intents/\(intent)", token: token)
            let status = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["status"] as? String
            if status == "succeeded" { return (promoted, accepted, monotonic() - killed) }
            if status == "failed" || status == "superseded" { throw ValidationError("the isolation \(status!)") }
            usleep(20_000)
        }
        throw ValidationError("the isolation was not done within 180 s of the kill")
    }
}
