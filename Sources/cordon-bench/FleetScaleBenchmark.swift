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

/// Many agents on one server: the server and PostgreSQL are real (in a namespace); the agents are
/// simulated in this process, speaking the real protocol over HTTPS (enroll, long poll, report).
///
/// Figures: the server's memory idle and with every agent's poll open; enrollment and check-in
/// (report) throughput, with the decision-log entries and flows they upload per second;
/// `GET /api/v1/hosts/{id}` latency and isolation request-to-agent latency under that load.
struct FleetScaleBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-scale",
                                                    abstract: "Simulated agents against one real cordon-server and PostgreSQL (needs root).")

    @Option(help: "Simulated agents.") var agents: Int = 10_000
    @Option(help: "Requests in flight while enrolling and reporting.") var concurrency: Int = 64
    @Option(help: "Decision-log entries per report.") var entries: Int = 5
    @Option(help: "Flow rows per report.") var flows: Int = 20
    @Option(help: "Timed GET /api/v1/hosts/{id} and isolation requests.") var samples: Int = 200
    @Option(help: "Milliseconds from one isolation request to the next: 200 of them span more than one 25 s poll cycle, so polls that are renewing are sampled too.")
    var pace: Int = 150

    func run() throws {
        guard (1...50_000).contains(agents), (1...1024).contains(concurrency), (0...1000).contains(entries), (0...5000).contains(flows),
              (1...10_000).contains(samples), (0...10_000).contains(pace) else { throw ValidationError("an option is out of range") }
        say("# cordon-bench fleet-scale --agents \(agents) --concurrency \(concurrency) --entries \(entries) --flows \(flows) --samples \(samples) --pace \(pace)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try SimulatedFleet(lab: lab, agents: agents)
        let secret = try fleet.secret(tags: "tier=bench")
        let (agents, concurrency, entries, flows, samples, pace) = (self.agents, self.concurrency, self.entries, self.flows, self.samples, self.pace)

        try fleet.run {
            let client = try fleet.client(connections: 2 * concurrency)
            let pollers = try (0..<SimulatedFleet.pollShards).map { _ in try fleet.client(connections: agents / SimulatedFleet.pollShards + 64) }
            let api = try fleet.client(credential: fleet.admin, connections: 16)
            try fleet.ready(api)
            let idleRSS = fleet.rss
            say("#   server up; RSS idle \(format(Double(idleRSS) / 1024, 1)) MiB")

            var started = monotonic()
            let credentials = try SimulatedFleet.enroll(client, secret: secret, count: agents, concurrency: concurrency, name: { "sim-\($0)" },
                                                        address: { "192.0.2.\($0 % 250 + 1)" })
            let enrollSeconds = monotonic() - started
            say("#   \(agents) enrolled in \(format(enrollSeconds, 1)) s")

            // Check-in: one report per agent, each with its log entries and flows.
            started = monotonic()
            _ = try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await SimulatedFleet.parallel(agents, concurrency) { index in
                    let report = Self.report(index: index, entries: entries, flows: flows)
                    _ = try await client.call(.POST, "/agent/v1/report", body: report, headers: [("Authorization", "Bearer \(credentials[index].credential)")],
                                              timeout: 60, as: ReportResponse.self)
                    return true
                }
                return true
            }
            let reportSeconds = monotonic() - started
            say("#   \(agents) reports in \(format(reportSeconds, 1)) s")

            // Every agent holds its long poll; arrivals of a new generation are timed.
            let polls = SimulatedPolls()
            polls.start(credentials, clients: pollers) { _, _ in nil }
            defer { polls.stop() }
            started = monotonic()
            let connected = try SimulatedPolls.connected(api, count: agents, within: 120)
            Thread.sleep(forTimeInterval: 3)
            let loadedRSS = fleet.rss
            say("#   \(connected) agents connected after \(format(monotonic() - started, 1)) s; server RSS \(format(Double(loadedRSS) / 1024, 1)) MiB")

            var reads: [Double] = []
            for index in 0..<samples {
                let host = credentials[(index * 7919) % agents].0
                let t0 = monotonic()
                _ = try FleetBenchmark.wait { () async throws -> HostView? in try await api.call(.GET, "/api/v1/hosts/\(host)", timeout: 10, as: HostView.self) }
                reads.append(monotonic() - t0)
            }
            var toAgent: [Double] = []
            var missed = 0
            for index in 0..<min(samples, agents) {
                let host = credentials[(index * 104_729) % agents].id
                let t0 = monotonic()
                _ = try FleetBenchmark.wait { () async throws -> IntentAccepted? in
                    try await api.call(.POST, "/api/v1/hosts/\(host)/isolation", body: IsolationRequest(state: .isolated, reason: "bench"), timeout: 10,
                                       as: IntentAccepted.self)
                }
                defer { while monotonic() < t0 + Double(pace) / 1000 { usleep(1000) } }
                let deadline = monotonic() + 10
                var arrival: (at: Double, sent: Double)?
                while arrival == nil && monotonic() < deadline {
                    if let a = polls.arrivals.withLock({ $0[host] }), a.at > t0 { arrival = (a.at, a.sent) } else { usleep(200) }
                }
                guard let arrival else {
                    missed += 1
                    say("#   intent \(index) (host \(host)) did not reach its agent within 10 s; its poll: \(polls.describe(host))")
                    continue
                }
                toAgent.append(arrival.at - t0)
                if arrival.at - t0 > 0.25 {
                    say("#   intent \(index) slow: \(format((arrival.at - t0) * 1000, 1)) ms; the poll that brought it was sent \(format(t0 - arrival.sent, 2)) s before the request")
                }
            }

            say("| measurement | value |")
            say("|---|---|")
            say("| simulated agents connected (long poll open) | \(connected) of \(agents) |")
            say("| server RSS idle / with every agent connected | \(format(Double(idleRSS) / 1024, 1)) MiB / \(format(Double(loadedRSS) / 1024, 1)) MiB |")
            say("| enrollment | \(format(Double(agents) / enrollSeconds, 0)) hosts/s |")
            say("| check-in (report: status, \(entries) log entries, \(flows) flows) | \(format(Double(agents) / reportSeconds, 0)) reports/s |")
            say("| upload into PostgreSQL | \(format(Double(agents * entries) / reportSeconds, 0)) log entries/s, \(format(Double(agents * flows) / reportSeconds, 0)) flow rows/s |")
            say("| GET /api/v1/hosts/{id} under load, p50 / p99 | \(format(median(reads) * 1000, 2)) / \(format(percentile(reads, 0.99) * 1000, 2)) ms |")
            say("| isolation request → its agent's poll answered, p50 / p99 (of those answered) | \(format(median(toAgent) * 1000, 2)) / \(format(percentile(toAgent, 0.99) * 1000, 2)) ms |")
            say("| isolation requests not answered to the agent within 10 s | \(missed) of \(min(samples, agents)) |")
        }
    }

    /// A report with a valid chain of `entries` decision-log entries and `flows` flow rows.
    static func report(index: Int, entries: Int, flows: Int) -> AgentReport {
        var log: [Decision] = []
        var previous = ""
        for sequence in 1...max(1, entries) where entries > 0 {
            var d = Decision(sequence: Int64(sequence), id: UUID().uuidString.lowercased(), action: "isolate", operator: "sim", reason: "bench",
                             backend: "nftables", policy: "p", policyDigest: ContentDigest.hex("p"), managementWhitelist: [], whitelist: "",
                             appliedAt: TimeText.now(), outcome: "success", previousHash: previous, hash: "", format: Decision.currentFormat)
            d.hash = ContentDigest.hex(Decision.chained(d))
            previous = d.hash
            log.append(d)
        }
        let now = TimeText.now()
        let rows = (0..<flows).map { n -> FlowRecord in
            let key = FlowKey(direction: .outbound, transport: IPProtocolNumber.tcp, local: IPAddress("192.0.2.\(index % 250 + 1)")!,
                              remote: IPPrefix(IPAddress("198.51.100.\(n % 250 + 1)")!), service: UInt16(1000 + n), verdict: .allowed)
            return FlowRecord(key: key, stats: FlowStats(connections: 3, packets: 30, bytes: 3000, firstSeen: now, lastSeen: now))
        }
        let status = AgentStatus(mode: "discovery", isolated: false, rulesetVersion: nil, rulesetDigest: nil, lostEvents: 0, guardRestores: 0,
                                 guardEscalations: 0, flows: flows, agentVersion: "sim", addresses: [])
        return AgentReport(status: status, observed: .released, appliedGeneration: 0, applied: nil, local: nil, log: log, flows: rows)
    }
}
