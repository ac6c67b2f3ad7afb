import ArgumentParser
import CordonLab
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// How long the API takes to answer while its database is away: healthy, paused (SIGSTOP of the
/// postmaster and its backends) and stopped. Each answer is timed from the request (curl, in the
/// server's namespace, a new connection each) to its status; what matters is that the paused and
/// stopped rows stay under the deadline plus 100 ms instead of hanging.
struct FleetOutageBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-outage",
                                                    abstract: "API answer times with PostgreSQL healthy, paused and stopped (needs root and PostgreSQL).")

    @Option(help: "Requests per condition (half GET /api/v1/hosts, half POST isolation).") var requests: Int = 40
    @Option(help: "Requests in flight at once.") var concurrency: Int = 8
    @Option(help: "The server's --database-timeout.") var deadline: Double = 5

    func run() throws {
        guard (2...1000).contains(requests), (1...64).contains(concurrency), (0.1...60).contains(deadline) else { throw ValidationError("out of range") }
        say("# cordon-bench fleet-outage --requests \(requests) --concurrency \(concurrency) --deadline \(deadline)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try FleetScenario(lab: lab, durableDatabase: true)
        _ = try fleet.startServer(extra: ["--database-timeout", String(deadline)])
        let token = try fleet.token(role: "responder", name: "bench")
        let host = try Self.agentA(fleet, token: token)

        var rows: [(String, [Double], [Int: Int])] = []
        let healthy = measure(fleet, token: token, host: host)
        rows.append(("healthy", healthy.0, healthy.1))
        fleet.postgres.pause()
        let paused = measure(fleet, token: token, host: host)
        fleet.postgres.resume()
        rows.append(("paused (SIGSTOP)", paused.0, paused.1))
        fleet.postgres.stop()
        let stopped = measure(fleet, token: token, host: host)
        rows.append(("stopped", stopped.0, stopped.1))
        try fleet.postgres.start()

        say("| database | requests | median ms | p99 ms | max ms | answers |")
        say("|---|---|---|---|---|---|")
        for (name, times, statuses) in rows {
            let answers = statuses.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
            say("| \(name) | \(times.count) | \(format(median(times) * 1000, 1)) | \(format(percentile(times, 0.99) * 1000, 1)) | \(format(times.max()! * 1000, 1)) | \(answers) |")
        }
        say("# deadline \(format(deadline * 1000, 0)) ms; the goal: p99 under \(format(deadline * 1000 + 100, 0)) ms while the database is away")
    }

    /// Host a's agent started and enrolled; its id once it is connected.
    static func agentA(_ fleet: FleetScenario, token: String) throws -> String {
        _ = try fleet.startAgent(fleet.a, secretFile: try fleet.enrollSecret())
        for _ in 0..<200 {
            let answer = try fleet.api("GET", "/api/v1/hosts", token: token)
            if let host = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
                .flatMap({ ($0["items"] as? [[String: Any]])?.first { $0["connected"] as? Bool == true }?["id"] as? String }) { return host }
            usleep(100_000)
        }
        throw ValidationError("no host enrolled")
    }

    /// Seconds per request and the count of each status.
    func measure(_ fleet: FleetScenario, token: String, host: String) -> ([Double], [Int: Int]) {
        let results = Mutex<[(Double, Int)]>([])
        let next = Atomic<Int>(0)
        let threads = (0..<concurrency).map { _ in
            Thread {
                while true {
                    let index = next.add(1, ordering: .relaxed).oldValue
                    guard index < requests else { return }
                    let started = monotonic()
                    let answer = index % 2 == 0
                        ? try? fleet.api("GET", "/api/v1/hosts", token: token)
                        : try? fleet.api("POST", "/api/v1/hosts/\(host)/isolation", token: token, body: #"{"state":"released","reason":"bench"}"#)
                    results.withLock { $0.append((monotonic() - started, answer?.status ?? 0)) }
                }
            }
        }
        for thread in threads { thread.start() }
        // Threads have no join: wait until every request has an answer (curl gives up after 60 s).
        while results.withLock({ $0.count }) < requests { usleep(10_000) }
        let all = results.withLock { $0 }
        return (all.map(\.0), Dictionary(all.map { ($0.1, 1) }, uniquingKeysWith: +))
    }
}
