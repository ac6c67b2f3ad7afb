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

/// Issue 22's soak: simulated agents against one real server for half an hour, every one holding
/// its long poll and reporting (status, a decision-log entry, flow rows with growing totals),
/// isolations and releases requested throughout, and rollouts running back to back (enforce,
/// then discovery). Sampled each interval: the server's RSS and open descriptors, PostgreSQL's
/// database size, the requests' time to reach their agent. The question is whether the end looks
/// like the start.
struct FleetSoakBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-soak",
                                                    abstract: "Simulated agents against one real cordon-server for a long run: memory, descriptors, database size and latency over time (needs root).")

    @Option(help: "Simulated agents.") var agents: Int = 10_000
    @Option(help: "Minutes of load after the fleet is up.") var minutes: Int = 30
    @Option(help: "Seconds between samples.") var sample: Int = 60
    @Option(help: "Seconds between one agent's reports (the real agent: 5 s; see Docs/performance.md).") var reportSeconds: Int = 60
    @Option(help: "Isolation or release requests per minute, each timed to its agent.") var requestsPerMinute: Int = 60
    @Option(help: "Requests in flight while enrolling and reporting.") var concurrency: Int = 64

    struct Agent {
        var sequence: Int64 = 0
        var hash = ""
        var generation: Int64 = 0
        var isolated = false
        var digest: String?
        var reports: UInt64 = 0
    }

    struct Sample {
        var minute: Double
        var rss: Int
        var descriptors: Int
        var databaseBytes: Int
        var reports: Int
        var rollouts: Int
    }

    func run() throws {
        guard (10...50_000).contains(agents), (1...600).contains(minutes), (5...3600).contains(sample), (1...3600).contains(reportSeconds),
              (1...600).contains(requestsPerMinute), (1...1024).contains(concurrency) else { throw ValidationError("an option is out of range") }
        say("# cordon-bench fleet-soak --agents \(agents) --minutes \(minutes) --sample \(sample) --report-seconds \(reportSeconds) "
            + "--requests-per-minute \(requestsPerMinute) --concurrency \(concurrency)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try SimulatedFleet(lab: lab, agents: agents)
        let secret = try fleet.secret(tags: "tier=bench")
        let (agents, minutes, sample, reportSeconds, requestsPerMinute, concurrency) =
            (self.agents, self.minutes, self.sample, self.reportSeconds, self.requestsPerMinute, self.concurrency)

        try fleet.run {
            let client = try fleet.client(connections: 2 * concurrency)
            let pollers = try (0..<SimulatedFleet.pollShards).map { _ in try fleet.client(connections: agents / SimulatedFleet.pollShards + 64) }
            let api = try fleet.client(credential: fleet.admin, connections: 16)
            try fleet.ready(api)
            let hosts = try SimulatedFleet.enroll(client, secret: secret, count: agents, concurrency: concurrency, name: { "soak-\($0)" },
                                                  address: { "2001:db8:5::\(String($0 + 1, radix: 16))" })
            let state = Mutex([Agent](repeating: Agent(), count: agents))
            let reportsSent = Atomic<Int>(0), reportFailures = Atomic<Int>(0)
            let report: @Sendable (Int) async -> Void = { index in
                let body = state.withLock { Self.report(&$0[index], index: index) }
                do {
                    _ = try await client.call(.POST, "/agent/v1/report", body: body, headers: [("Authorization", "Bearer \(hosts[index].credential)")],
                                              timeout: 60, as: ReportResponse.self)
                    reportsSent.add(1, ordering: .relaxed)
                } catch {
                    reportFailures.add(1, ordering: .relaxed)
                }
            }
            _ = try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await SimulatedFleet.parallel(agents, concurrency) { index in await report(index) }
                return true
            }
            _ = try FleetBenchmark.wait { () async throws -> RulesetVersionView? in
                try await api.call(.POST, "/api/v1/rulesets/bench/versions",
                                   body: ApproveRequest(content: FleetRolloutBenchmark.ruleset, selector: nil, since: nil, acceptRisks: true),
                                   timeout: 120, as: RulesetVersionView.self)
            }
            _ = try FleetBenchmark.wait { () async throws -> AssignmentView? in
                try await api.call(.POST, "/api/v1/assignments", body: AssignmentRequest(ruleset: "bench", version: nil, selector: #"tier == "bench""#),
                                   timeout: 120, as: AssignmentView.self)
            }

            // Every agent applies what it is sent and says so, as the rollout benchmark's do.
            let polls = SimulatedPolls()
            polls.start(hosts, clients: pollers) { index, document in
                state.withLock { s in
                    s[index].generation = document.generation
                    s[index].isolated = document.isolation.state == .isolated
                    if let mode = document.mode { s[index].digest = mode.mode == .enforce ? document.policy?.digest : nil }
                }
                return SimulatedFleet.report(generation: document.generation, result: AppliedGeneration(generation: document.generation, ok: true, error: nil),
                                             digest: state.withLock { $0[index].digest }, isolated: document.isolation.state == .isolated)
            }
            defer { polls.stop() }
            let connected = try SimulatedPolls.connected(api, count: agents, within: 180)
            say("#   \(agents) agents enrolled, \(connected) connected; server RSS \(format(Double(fleet.rss) / 1024, 1)) MiB")

            let started = monotonic(), end = started + Double(minutes * 60)
            let running: @Sendable () -> Bool = { monotonic() < end }
            var threads: [Thread] = []
            // Reports: each agent every `reportSeconds`, spread evenly.
            threads.append(Thread {
                var index = 0
                let perSecond = max(1, agents / reportSeconds)
                while running() {
                    let t0 = monotonic()
                    let first = index
                    _ = try? FleetBenchmark.wait { () async throws -> Bool? in
                        _ = try await SimulatedFleet.parallel(perSecond, concurrency) { n in await report((first + n) % agents) }
                        return true
                    }
                    index = (index + perSecond) % agents
                    while monotonic() < t0 + 1 && running() { usleep(10_000) }
                }
            })
            // Requests: an isolation, then its release, of hosts spread over the fleet, each timed
            // from the request to its agent's poll bringing it.
            let latencies = Mutex<[(minute: Double, seconds: Double)]>([]), missed = Mutex(0)
            threads.append(Thread {
                var n = 0
                while running() {
                    let t0 = monotonic()
                    defer { while monotonic() < t0 + 60 / Double(requestsPerMinute) && running() { usleep(1000) } }
                    let host = hosts[(n / 2 * 7919) % agents].id
                    let wanted: IsolationWord = n % 2 == 0 ? .isolated : .released
                    n += 1
                    guard (try? FleetBenchmark.wait({ () async throws -> IntentAccepted? in
                        try await api.call(.POST, "/api/v1/hosts/\(host)/isolation", body: IsolationRequest(state: wanted, reason: "soak"), timeout: 10,
                                           as: IntentAccepted.self)
                    })) != nil else { missed.withLock { $0 += 1 }; continue }
                    var arrived: Double?
                    while arrived == nil && monotonic() < t0 + 10 {
                        if let a = polls.arrivals.withLock({ $0[host] }), a.at > t0, a.document.isolation.state == wanted { arrived = a.at } else { usleep(200) }
                    }
                    guard let arrived else { missed.withLock { $0 += 1 }; continue }
                    latencies.withLock { $0.append(((t0 - started) / 60, arrived - t0)) }
                }
            })
            // Rollouts back to back: enforce in waves, then discovery in waves, until the end.
            let rollouts = Atomic<Int>(0)
            threads.append(Thread {
                var mode = ModeWord.enforce
                while running() {
                    let request = RolloutRequest(selector: #"tier == "bench""#, mode: mode, waves: ["1", "1%", "10%", "100%"], soakSeconds: 30,
                                                 confirmWindowSeconds: 120)
                    guard let view = try? FleetBenchmark.wait({ () async throws -> RolloutView? in
                        try await api.call(.POST, "/api/v1/rollouts", body: request, timeout: 120, as: RolloutView.self)
                    }) else { Thread.sleep(forTimeInterval: 5); continue }
                    var current = view
                    while current.state == .running && running() {
                        Thread.sleep(forTimeInterval: 2)
                        if let next = try? FleetBenchmark.wait({ () async throws -> RolloutView? in
                            try await api.call(.GET, "/api/v1/rollouts/\(view.id)", timeout: 60, as: RolloutView.self)
                        }) { current = next }
                    }
                    if current.state == .succeeded { rollouts.add(1, ordering: .relaxed) }
                    if current.state == .running { break }
                    if current.state == .halted {
                        say("#   rollout \(view.id) halted: \(current.haltReason ?? "")")
                        _ = try? FleetBenchmark.wait({ () async throws -> Bool? in
                            _ = try await api.raw(.POST, "/api/v1/rollouts/\(view.id)/abort", timeout: 60)
                            return true
                        })
                    }
                    mode = mode == .enforce ? .discovery : .enforce
                }
            })
            for thread in threads { thread.start() }

            var samples: [Sample] = []
            say("| minute | server RSS MiB | descriptors | database MiB | reports so far | rollouts done |")
            say("|---|---|---|---|---|---|")
            while true {
                let at = monotonic()
                let size = Int((try? fleet.postgres.psql("SELECT pg_database_size('postgres')")) ?? "") ?? 0
                let s = Sample(minute: (at - started) / 60, rss: fleet.rss, descriptors: Self.descriptors(fleet.server.pid), databaseBytes: size,
                               reports: reportsSent.load(ordering: .relaxed), rollouts: rollouts.load(ordering: .relaxed))
                samples.append(s)
                say("| \(format(s.minute, 1)) | \(format(Double(s.rss) / 1024, 1)) | \(s.descriptors) | \(format(Double(s.databaseBytes) / 1_048_576, 1)) | \(s.reports) | \(s.rollouts) |")
                guard at < end else { break }
                while monotonic() < min(at + Double(sample), end + 0.5) { usleep(100_000) }
            }
            // The load threads see the end and stop within a request's time.
            Thread.sleep(forTimeInterval: 2)

            let window = Double(minutes) / 6
            let all = latencies.withLock { $0 }
            let startWindow = all.filter { $0.minute >= window && $0.minute < 2 * window }.map(\.seconds)
            let endWindow = all.filter { $0.minute >= Double(minutes) - window }.map(\.seconds)
            let warm = samples.first { $0.minute >= window } ?? samples[0]
            let last = samples.last!
            say("| figure | start (after \(format(window, 1)) min of warm-up) | end (last \(format(window, 1)) min) | change | goal |")
            say("|---|---|---|---|---|")
            let (p0, p1) = (percentile(startWindow, 0.99) * 1000, percentile(endWindow, 0.99) * 1000)
            say("| request to agent p99 (\(startWindow.count), \(endWindow.count) requests) | \(format(p0, 1)) ms | \(format(p1, 1)) ms | \(format((p1 / p0 - 1) * 100, 1)) % | within 20 % |")
            say("| request to agent median | \(format(median(startWindow) * 1000, 1)) ms | \(format(median(endWindow) * 1000, 1)) ms | | |")
            say("| server RSS | \(format(Double(warm.rss) / 1024, 1)) MiB | \(format(Double(last.rss) / 1024, 1)) MiB | \(format((Double(last.rss) / Double(warm.rss) - 1) * 100, 1)) % | under 5 % growth |")
            say("| server descriptors | \(warm.descriptors) | \(last.descriptors) | \(last.descriptors - warm.descriptors) | no growth |")
            say("| PostgreSQL database size | \(format(Double(warm.databaseBytes) / 1_048_576, 1)) MiB | \(format(Double(last.databaseBytes) / 1_048_576, 1)) MiB | +\(format(Double(last.databaseBytes - warm.databaseBytes) / 1_048_576, 1)) MiB | |")
            say("# \(last.reports) reports (\(format(Double(last.reports) / (Double(minutes) * 60), 0))/s), \(reportFailures.load(ordering: .relaxed)) failed; "
                + "\(all.count) requests timed, \(missed.withLock { $0 }) not at their agent within 10 s; \(last.rollouts) rollouts done; "
                + "\(polls.polls.withLock { $0.values.reduce(0) { $0 + $1.failures } }) poll failures")
        }
    }

    /// The next periodic report of a simulated agent: its status as its last document left it,
    /// one decision-log entry continuing its chain, and five flow rows with growing totals.
    static func report(_ agent: inout Agent, index: Int) -> AgentReport {
        agent.sequence += 1
        agent.reports += 1
        var d = Decision(sequence: agent.sequence, id: UUID().uuidString.lowercased(), action: "confirm", operator: "sim", reason: "soak",
                         backend: "nftables", policy: "p", policyDigest: ContentDigest.hex("p"), managementWhitelist: [], whitelist: "",
                         appliedAt: TimeText.now(), outcome: "success", previousHash: agent.hash, hash: "", format: Decision.currentFormat)
        d.hash = ContentDigest.hex(Decision.chained(d))
        agent.hash = d.hash
        let now = TimeText.now()
        let flows = (0..<5).map { n -> FlowRecord in
            let key = FlowKey(direction: .outbound, transport: IPProtocolNumber.tcp, local: IPAddress("192.0.2.\(index % 250 + 1)")!,
                              remote: IPPrefix(IPAddress("198.51.100.\(n + 1)")!), service: UInt16(443 + n), verdict: .allowed)
            return FlowRecord(key: key, stats: FlowStats(connections: agent.reports, packets: agent.reports * 10, bytes: agent.reports * 1000,
                                                         firstSeen: now, lastSeen: now))
        }
        var body = SimulatedFleet.report(generation: agent.generation, result: nil, digest: agent.digest, isolated: agent.isolated, flows: flows)
        body.log = [d]
        return body
    }

    static func descriptors(_ pid: pid_t) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }
}
