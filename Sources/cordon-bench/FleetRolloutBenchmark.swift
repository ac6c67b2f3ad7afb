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
/// Figures:
/// - an assignment touching every host of the tier: the request's own time, as it recomputes
///   and stores every effective policy before it answers. The hosts' documents do not change
///   (a policy reaches a host only through a rollout), so no poll is woken by it;
/// - a rollout to the tier in waves `1,1%,10%,100%` with no soak, from its start until
///   `succeeded` (every host confirmed), each simulated agent confirming as soon as its poll
///   brings the step;
/// - meanwhile, isolations of hosts outside the tier: from the request until the agent's poll
///   brings it, with every agent connected.
struct FleetRolloutBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-rollout",
                                                    abstract: "An assignment and a rollout across simulated agents on one real cordon-server, with isolations meanwhile (needs root).")

    @Option(help: "Simulated agents, all connected.") var agents: Int = 1000
    @Option(help: "Of those, the tier the assignment and the rollout are for (default: all of them).") var tier: Int?
    @Option(help: "Requests in flight while enrolling and reporting.") var concurrency: Int = 64
    @Option(help: "Runs of the assignment change (removed and made again).") var runs: Int = 3
    @Option(help: "Isolations of hosts outside the tier while the rollout runs (needs --tier below --agents).") var isolations: Int = 100
    @Option(help: "Milliseconds from one isolation request to the next.") var pace: Int = 100

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
        let tier = self.tier ?? agents
        guard (1...20_000).contains(agents), (1...agents).contains(tier), (1...1024).contains(concurrency), (1...20).contains(runs),
              (0...10_000).contains(isolations), (0...10_000).contains(pace) else {
            throw ValidationError("an option is out of range")
        }
        say("# cordon-bench fleet-rollout --agents \(agents) --tier \(tier) --concurrency \(concurrency) --runs \(runs) --isolations \(isolations) --pace \(pace)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try SimulatedFleet(lab: lab, agents: agents)
        let benchSecret = try fleet.secret(tags: "tier=bench"), restSecret = try fleet.secret(tags: "tier=rest")
        let (agents, concurrency, runs, pace) = (self.agents, self.concurrency, self.runs, self.pace)
        // Each host outside the tier is isolated once at most.
        let isolations = min(self.isolations, agents - tier)

        try fleet.run {
            let client = try fleet.client(connections: 2 * concurrency)
            let pollers = try (0..<SimulatedFleet.pollShards).map { _ in try fleet.client(connections: agents / SimulatedFleet.pollShards + 64) }
            let api = try fleet.client(credential: fleet.admin, connections: 16)
            try fleet.ready(api)
            let address: @Sendable (Int) -> String = { "2001:db8:1::\(String($0 + 1, radix: 16))" }
            var hosts = try SimulatedFleet.enroll(client, secret: benchSecret, count: tier, concurrency: concurrency, name: { "web-\($0)" }, address: address)
            if tier < agents {
                hosts += try SimulatedFleet.enroll(client, secret: restSecret, count: agents - tier, concurrency: concurrency, name: { "rest-\($0)" },
                                                   address: { address(tier + $0) })
            }
            let all = hosts
            // One report each: every host is connected and in discovery.
            _ = try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await SimulatedFleet.parallel(agents, concurrency) { index in
                    _ = try await client.call(.POST, "/agent/v1/report", body: SimulatedFleet.report(generation: 0, result: nil, digest: nil),
                                              headers: [("Authorization", "Bearer \(all[index].credential)")], timeout: 60, as: ReportResponse.self)
                    return true
                }
                return true
            }
            _ = try FleetBenchmark.wait { () async throws -> RulesetVersionView? in
                try await api.call(.POST, "/api/v1/rulesets/bench/versions", body: ApproveRequest(content: Self.ruleset, selector: nil, since: nil, acceptRisks: true),
                                   timeout: 120, as: RulesetVersionView.self)
            }

            // Every simulated agent polls and applies at once: a step is confirmed by its report.
            let confirmed = Mutex(0)
            let polls = SimulatedPolls()
            polls.start(all, clients: pollers) { _, document in
                let enforce = document.mode?.mode == .enforce
                if enforce { confirmed.withLock { $0 += 1 } }
                return SimulatedFleet.report(generation: document.generation, result: AppliedGeneration(generation: document.generation, ok: true, error: nil),
                                             digest: enforce ? document.policy?.digest : nil, isolated: document.isolation.state == .isolated)
            }
            defer { polls.stop() }
            let connected = try SimulatedPolls.connected(api, count: agents, within: 120)
            let loadedRSS = fleet.rss
            say("#   \(agents) agents enrolled, \(connected) connected (the tier: \(tier)); server RSS \(format(Double(loadedRSS) / 1024, 1)) MiB")

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
            let sample = try FleetBenchmark.wait { () async throws -> HostView? in
                try await api.call(.GET, "/api/v1/hosts/\(all[tier - 1].id)", timeout: 10, as: HostView.self)
            }
            guard sample.policy.sync == "pending" else { throw ValidationError("the tier's last host reads \(sample.policy.sync), not pending") }

            // The rollout, with isolations of hosts outside the tier meanwhile.
            let t0 = monotonic()
            let started = try FleetBenchmark.wait { () async throws -> RolloutView? in
                try await api.call(.POST, "/api/v1/rollouts",
                                   body: RolloutRequest(selector: #"tier == "bench""#, mode: .enforce, waves: ["1", "1%", "10%", "100%"], soakSeconds: 0,
                                                        confirmWindowSeconds: 120),
                                   timeout: 120, as: RolloutView.self)
            }
            let done = Atomic<Bool>(false)
            let toAgent = Mutex<[Double]>([]), missed = Mutex(0)
            let isolate: @Sendable () -> Void = {
                for index in 0..<isolations where !done.load(ordering: .relaxed) {
                    let host = all[tier + (index * 7919) % (agents - tier)].id
                    let t0 = monotonic()
                    defer { while monotonic() < t0 + Double(pace) / 1000 { usleep(1000) } }
                    guard (try? FleetBenchmark.wait({ () async throws -> IntentAccepted? in
                        try await api.call(.POST, "/api/v1/hosts/\(host)/isolation", body: IsolationRequest(state: .isolated, reason: "bench"), timeout: 10,
                                           as: IntentAccepted.self)
                    })) != nil else { missed.withLock { $0 += 1 }; continue }
                    let deadline = monotonic() + 10
                    var arrived: Double?
                    while arrived == nil && monotonic() < deadline {
                        if let a = polls.arrivals.withLock({ $0[host] }), a.at > t0, a.document.isolation.state == .isolated { arrived = a.at } else { usleep(200) }
                    }
                    guard let arrived else {
                        missed.withLock { $0 += 1 }
                        say("#   isolation \(index) of \(host) did not reach its agent within 10 s; its poll: \(polls.describe(host))")
                        continue
                    }
                    toAgent.withLock { $0.append(arrived - t0) }
                }
            }
            let isolated = DispatchSemaphore(value: 0)
            Thread { isolate(); isolated.signal() }.start()
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
            done.store(true, ordering: .relaxed)
            isolated.wait()
            let rss = fleet.rss
            let pollFailures = polls.polls.withLock { $0.values.reduce(0) { $0 + $1.failures } }
            let lastError = polls.polls.withLock { $0.values.compactMap(\.error).first }
            let reports = polls.reportFailures.withLock { $0 }
            say("#   rollout \(view.state.rawValue) in \(format(rolloutSeconds, 1)) s; waves of \(view.waves.map { "\($0.hosts)" }.joined(separator: ", ")) hosts, "
                + "started at " + waveTimes.sorted { $0.key < $1.key }.map { "\(format($0.value, 1)) s" }.joined(separator: ", ")
                + (view.haltReason.map { "; halted: \($0)" } ?? "") + "; \(pollFailures) polls failed" + (lastError.map { " (one: \($0))" } ?? "")
                + "; \(reports.count) reports failed and were sent again" + (reports.last.map { " (the last: \($0))" } ?? "")
                + "; \(confirmed.withLock { $0 }) steps confirmed; server RSS \(format(Double(rss) / 1024, 1)) MiB")
            let latencies = toAgent.withLock { $0 }
            say("| measurement | value |")
            say("|---|---|")
            say("| assignment touching \(tier) of \(agents) connected hosts (effective policies recomputed and stored), median of \(runs) | \(format(median(assignSeconds) * 1000, 0)) ms |")
            say("| rollout to \(tier) simulated agents, waves 1,1%,10%,100%, no soak, until `\(view.state.rawValue)` | \(format(rolloutSeconds, 1)) s |")
            if isolations > 0 {
                say("| isolation request → its agent's poll answered while the rollout ran, p50 / p99 (\(latencies.count) requests) | "
                    + "\(format(median(latencies) * 1000, 2)) / \(format(percentile(latencies, 0.99) * 1000, 2)) ms |")
                say("| isolations not at their agent within 10 s | \(missed.withLock { $0 }) |")
            }
            say("| server RSS, all connected / after the rollout | \(format(Double(loadedRSS) / 1024, 1)) / \(format(Double(rss) / 1024, 1)) MiB |")
        }
    }
}
