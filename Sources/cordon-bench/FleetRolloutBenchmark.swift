import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonLab
import CordonWire
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Fleet policy at scale: a real server and PostgreSQL (in a namespace), simulated agents in this
/// process speaking the real protocol (enroll, long poll of `/agent/v1/state`, reports).
///
/// Figures: an assignment touching every host (until every effective policy is recomputed and
/// stored: the request's own time, as it recomputes before it answers); a rollout in waves
/// `1,1%,10%,100%` with no soak, from its start until `succeeded` (every host confirmed), each
/// simulated agent confirming as soon as its poll brings the step.
struct FleetRolloutBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-rollout",
                                                    abstract: "An assignment and a rollout across simulated agents on one real cordon-server (needs root).")

    @Option(help: "Simulated agents.") var agents: Int = 1000
    @Option(help: "Requests in flight while enrolling and reporting.") var concurrency: Int = 64
    @Option(help: "Runs of the assignment change (removed and made again).") var runs: Int = 3

    static let port = 8443
    static let ruleset = """
        name: bench
        appliesTo: 'tier == "bench"'
        networks:
          - name: web
            entries: [203.0.113.20]
            services: [tcp/443]
        outgoing:
          - to: web

        """

    func run() throws {
        guard (1...20_000).contains(agents), (1...1024).contains(concurrency), (1...20).contains(runs) else {
            throw ValidationError("an option is out of range")
        }
        say("# cordon-bench fleet-rollout --agents \(agents) --concurrency \(concurrency) --runs \(runs)")
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, Int(limit.rlim_cur) > agents + 1000 else {
            throw ValidationError("the open-files limit (\(limit.rlim_max)) is too low for \(agents) agents")
        }
        let lab = try Lab()
        defer { lab.cleanup() }
        let namespace = try lab.namespace("server")
        let postgres = try PostgresCluster(lab: lab, namespace: namespace, durable: true)
        let serverBinary = (try DiscoveryScenario.cordonBinary() as NSString).deletingLastPathComponent + "/cordon-server"
        let data = lab.directory + "/server-data"
        let initialised = try lab.run(namespace, [serverBinary, "init", "--data", data, "--database", postgres.url, "--name", "127.0.0.1"])
        guard initialised.succeeded, let admin = initialised.stdout.split(separator: "\n").last.map(String.init) else {
            throw ValidationError("init: \(initialised.stderr)")
        }
        let secretRun = try lab.run(namespace, [serverBinary, "enroll-secret", "create", "--data", data, "--database", postgres.url, "--tags", "tier=bench"])
        guard let secret = secretRun.stdout.split(separator: "\n").last.map(String.init) else { throw ValidationError("enroll-secret") }
        let server = try lab.spawn(namespace, [serverBinary, "run", "--data", data, "--database", postgres.url, "--listen", "127.0.0.1:\(Self.port)",
                                                // Every simulated agent comes from 127.0.0.1: one address, as behind a NAT.
                                                "--max-connections-per-address", "100000"],
                                   log: lab.directory + "/server.log")
        let ca = try String(contentsOfFile: data + "/ca.pem", encoding: .utf8)
        let (agents, concurrency, runs) = (self.agents, self.concurrency, self.runs)

        try lab.inNamespace(namespace) {
            let url = URL(string: "https://127.0.0.1:\(Self.port)")!
            let client = try FleetClient(server: url, caPEM: ca, credential: nil, connectTimeout: 10, connections: 2 * concurrency)
            let pollers = try (0..<FleetScaleBenchmark.pollShards).map { _ in
                try FleetClient(server: url, caPEM: ca, credential: nil, connectTimeout: 10, connections: agents / FleetScaleBenchmark.pollShards + 64)
            }
            let api = try FleetClient(server: url, caPEM: ca, credential: admin, connections: 16)
            try FleetBenchmark.wait { () async throws -> Bool? in (try? await api.raw(.GET, "/healthz", timeout: 2)) != nil ? true : nil }

            let credentials = try FleetBenchmark.wait { () async throws -> [(String, String)]? in
                try await FleetScaleBenchmark.parallel(agents, concurrency) { index in
                    let request = EnrollRequest(secret: secret, hostname: "sim-\(index)", machineID: "m\(index)", addresses: ["192.0.2.\(index % 250 + 1)"],
                                                agentVersion: "sim", tags: [:])
                    let answer = try await client.call(.POST, "/agent/v1/enroll", body: request, timeout: 60, as: EnrollResponse.self)
                    return (answer.hostID, answer.credential)
                }
            }
            // One report each: the hosts are connected and in discovery.
            try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await FleetScaleBenchmark.parallel(agents, concurrency) { index in
                    _ = try await client.call(.POST, "/agent/v1/report", body: Self.report(generation: 0, result: nil, digest: nil),
                                              headers: [("Authorization", "Bearer \(credentials[index].1)")], timeout: 60, as: ReportResponse.self)
                    return true
                }
                return true
            }
            say("#   \(agents) agents enrolled and reported")
            _ = try FleetBenchmark.wait { () async throws -> RulesetVersionView? in
                try await api.call(.POST, "/api/v1/rulesets/bench/versions", body: ApproveRequest(content: Self.ruleset, selector: nil, since: nil, acceptRisks: true),
                                   timeout: 120, as: RulesetVersionView.self)
            }

            // The assignment change: every host's effective policy recomputed and stored.
            var assignSeconds: [Double] = []
            var assignment = ""
            for run in 0..<runs {
                if !assignment.isEmpty {
                    let previous = assignment
                    _ = try FleetBenchmark.wait { () async throws -> Bool? in
                        _ = try await api.raw(.DELETE, "/api/v1/assignments/\(previous)", timeout: 120)
                        return true
                    }
                }
                let t0 = monotonic()
                let view = try FleetBenchmark.wait { () async throws -> AssignmentView? in
                    try await api.call(.POST, "/api/v1/assignments", body: AssignmentRequest(ruleset: "bench", version: nil, selector: #"tier == "bench""#),
                                       timeout: 120, as: AssignmentView.self)
                }
                assignSeconds.append(monotonic() - t0)
                assignment = view.id
                say("#   assignment run \(run + 1): \(format(assignSeconds.last! * 1000, 0)) ms for \(view.hosts) hosts")
            }

            // Every simulated agent polls; a step is confirmed at once by a report.
            let confirmed = Confirmations()
            let polling = Task {
                await withTaskGroup(of: Void.self) { group in
                    for (index, (_, credential)) in credentials.enumerated() {
                        let poller = pollers[index % FleetScaleBenchmark.pollShards]
                        group.addTask {
                            var after: Int64 = 0
                            while !Task.isCancelled {
                                let document: DesiredState
                                do {
                                    document = try await poller.call(.GET, "/agent/v1/state?after=\(after)&wait=25",
                                                                     headers: [("Authorization", "Bearer \(credential)")], timeout: 60, as: DesiredState.self)
                                } catch {
                                    confirmed.lastError.withLock { $0 = "\(error)" }
                                    try? await Task.sleep(for: .milliseconds(500))
                                    continue
                                }
                                guard document.generation > after else { continue }
                                after = document.generation
                                let report = Self.report(generation: after, result: AppliedGeneration(generation: after, ok: true, error: nil),
                                                         digest: document.mode?.mode == .enforce ? document.policy?.digest : nil)
                                if (try? await poller.call(.POST, "/agent/v1/report", body: report, headers: [("Authorization", "Bearer \(credential)")],
                                                           timeout: 60, as: ReportResponse.self)) != nil, document.mode != nil {
                                    confirmed.count.withLock { $0 += 1 }
                                }
                            }
                        }
                    }
                }
            }
            defer { polling.cancel() }
            Thread.sleep(forTimeInterval: 3)

            let t0 = monotonic()
            let started = try FleetBenchmark.wait { () async throws -> RolloutView? in
                try await api.call(.POST, "/api/v1/rollouts",
                                   body: RolloutRequest(selector: #"tier == "bench""#, mode: .enforce, waves: ["1", "1%", "10%", "100%"], soakSeconds: 0,
                                                        confirmWindowSeconds: 120),
                                   timeout: 120, as: RolloutView.self)
            }
            var view = started
            var waveTimes: [Int: Double] = [:]
            while view.state == .running && monotonic() - t0 < 300 {
                Thread.sleep(forTimeInterval: 0.1)
                view = try FleetBenchmark.wait { () async throws -> RolloutView? in
                    try await api.call(.GET, "/api/v1/rollouts/\(started.id)", timeout: 60, as: RolloutView.self)
                }
                if waveTimes[view.currentWave] == nil { waveTimes[view.currentWave] = monotonic() - t0 }
            }
            let rolloutSeconds = monotonic() - t0
            let rss = FleetScaleBenchmark.rss(server.pid)
            say("#   rollout \(view.state.rawValue) in \(format(rolloutSeconds, 1)) s; waves of \(view.waves.map { "\($0.hosts)" }.joined(separator: ", ")) hosts, "
                + "started at " + waveTimes.sorted { $0.key < $1.key }.map { "\(format($0.value, 1)) s" }.joined(separator: ", ")
                + (view.haltReason.map { "; halted: \($0)" } ?? "") + (confirmed.lastError.withLock { $0 }.map { "; last poll error: \($0)" } ?? "") + "; \(confirmed.count.withLock { $0 }) steps confirmed; server RSS \(format(Double(rss) / 1024, 1)) MiB")
            say("| measurement | value |")
            say("|---|---|")
            say("| assignment touching \(agents) hosts (effective policies recomputed and stored), median of \(runs) | \(format(median(assignSeconds) * 1000, 0)) ms |")
            say("| rollout to \(agents) simulated agents, waves 1,1%,10%,100%, no soak, until `\(view.state.rawValue)` | \(format(rolloutSeconds, 1)) s |")
        }
    }

    /// A simulated agent's report after `generation`, enforcing `digest` (nil: discovery).
    static func report(generation: Int64, result: AppliedGeneration?, digest: String?) -> AgentReport {
        let status = AgentStatus(mode: digest == nil ? "discovery" : "enforce", isolated: false, rulesetVersion: digest == nil ? nil : 1,
                                 rulesetDigest: digest, lostEvents: 0, guardRestores: 0, guardEscalations: 0, flows: 0, agentVersion: "sim", addresses: [])
        return AgentReport(status: status, observed: .released, appliedGeneration: generation, applied: result, local: nil, log: [], flows: [])
    }
}

/// How many steps the simulated agents confirmed.
final class Confirmations: Sendable {
    let count = Mutex<Int>(0)
    /// The last failure of a poll, said when the rollout does not succeed.
    let lastError = Mutex<String?>(nil)
}
