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

    static let port = 8443
    static let pollShards = 16

    func run() throws {
        guard (1...50_000).contains(agents), (1...1024).contains(concurrency), (0...1000).contains(entries), (0...5000).contains(flows),
              (1...10_000).contains(samples), (0...10_000).contains(pace) else { throw ValidationError("an option is out of range") }
        say("# cordon-bench fleet-scale --agents \(agents) --concurrency \(concurrency) --entries \(entries) --flows \(flows) --samples \(samples) --pace \(pace)")
        // Each side holds one socket per agent: the soft limit up to the hard one (inherited by the server).
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
        let (agents, concurrency, entries, flows, samples, pace) = (self.agents, self.concurrency, self.entries, self.flows, self.samples, self.pace)

        // Every socket of this client is made by event-loop threads started inside the namespace.
        try lab.inNamespace(namespace) {
            let url = URL(string: "https://127.0.0.1:\(Self.port)")!
            let client = try FleetClient(server: url, caPEM: ca, credential: nil, connectTimeout: 10, connections: 2 * concurrency)
            // Real agents each hold their own connection; one pool of 10,000 would make the
            // simulator's own pool bookkeeping part of what is measured.
            let pollers = try (0..<Self.pollShards).map { _ in
                try FleetClient(server: url, caPEM: ca, credential: nil, connectTimeout: 10, connections: agents / Self.pollShards + 64)
            }
            let api = try FleetClient(server: url, caPEM: ca, credential: admin, connections: 16)
            try FleetBenchmark.wait { () async throws -> Bool? in (try? await api.raw(.GET, "/healthz", timeout: 2)) != nil ? true : nil }
            let idleRSS = Self.rss(server.pid)
            say("#   server up; RSS idle \(format(Double(idleRSS) / 1024, 1)) MiB")

            // Enrollment.
            var started = monotonic()
            let credentials = try FleetBenchmark.wait { () async throws -> [(String, String)]? in
                try await Self.parallel(agents, concurrency) { index in
                    let request = EnrollRequest(secret: secret, hostname: "sim-\(index)", machineID: "m\(index)", addresses: ["192.0.2.\(index % 250 + 1)"],
                                                agentVersion: "sim", tags: [:])
                    let answer = try await client.call(.POST, "/agent/v1/enroll", body: request, timeout: 60, as: EnrollResponse.self)
                    return (answer.hostID, answer.credential)
                }
            }
            let enrollSeconds = monotonic() - started
            say("#   \(agents) enrolled in \(format(enrollSeconds, 1)) s")

            // Check-in: one report per agent, each with its log entries and flows.
            started = monotonic()
            try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await Self.parallel(agents, concurrency) { index in
                    let report = Self.report(index: index, entries: entries, flows: flows)
                    _ = try await client.call(.POST, "/agent/v1/report", body: report, headers: [("Authorization", "Bearer \(credentials[index].1)")],
                                              timeout: 60, as: ReportResponse.self)
                    return true
                }
                return true
            }
            let reportSeconds = monotonic() - started
            say("#   \(agents) reports in \(format(reportSeconds, 1)) s")

            // Every agent holds its long poll; arrivals of a new generation are timed.
            let arrivals = Arrivals()
            let polling = Task {
                await withTaskGroup(of: Void.self) { group in
                    for (index, (host, credential)) in credentials.enumerated() {
                        let client = pollers[index % Self.pollShards]
                        group.addTask {
                            var after: Int64 = 0
                            while !Task.isCancelled {
                                let sent = monotonic()
                                arrivals.polls.withLock { $0[host] = Poll(sent: sent, answered: nil, failures: $0[host]?.failures ?? 0) }
                                let answer: DesiredIsolation
                                do {
                                    answer = try await client.call(.GET, "/agent/v1/desired?after=\(after)&wait=25", headers: [("Authorization", "Bearer \(credential)")],
                                                                   timeout: 60, as: DesiredIsolation.self)
                                } catch {
                                    arrivals.polls.withLock { $0[host]?.failures += 1; $0[host]?.error = "\(error)" }
                                    try? await Task.sleep(for: .milliseconds(500))
                                    continue
                                }
                                let desired = answer
                                arrivals.polls.withLock { $0[host]?.answered = monotonic() }
                                if desired.generation > after {
                                    arrivals.times.withLock { $0[host] = monotonic() }
                                    arrivals.sentOf.withLock { $0[host] = sent }
                                    after = desired.generation
                                }
                            }
                        }
                    }
                }
            }
            defer { polling.cancel() }
            // Connected: every host's last_seen is recent. Polls open in waves; give them time.
            started = monotonic()
            var connected = 0
            while monotonic() - started < 120 {
                connected = try FleetBenchmark.wait { () async throws -> Int? in
                    try await api.call(.GET, "/api/v1/hosts", timeout: 60, as: Page<HostView>.self).items.filter(\.connected).count
                }
                if connected >= agents { break }
                Thread.sleep(forTimeInterval: 1)
            }
            Thread.sleep(forTimeInterval: 3)
            let loadedRSS = Self.rss(server.pid)
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
                let host = credentials[(index * 104_729) % agents].0
                arrivals.times.withLock { $0[host] = nil }
                let t0 = monotonic()
                _ = try FleetBenchmark.wait { () async throws -> IntentAccepted? in
                    try await api.call(.POST, "/api/v1/hosts/\(host)/isolation", body: IsolationRequest(state: .isolated, reason: "bench"), timeout: 10,
                                       as: IntentAccepted.self)
                }
                defer { while monotonic() < t0 + Double(pace) / 1000 { usleep(1000) } }
                let deadline = monotonic() + 10
                while arrivals.times.withLock({ $0[host] }) == nil && monotonic() < deadline { usleep(200) }
                guard let arrived = arrivals.times.withLock({ $0[host] }) else {
                    missed += 1
                    let now = monotonic()
                    let poll = arrivals.polls.withLock { $0[host] }
                    say("#   intent \(index) (host \(host)) did not reach its agent within 10 s; its poll: "
                        + (poll.map { "sent \(format(now - $0.sent, 2)) s ago, " + ($0.answered.map { "answered \(format(now - $0, 2)) s ago" } ?? "in flight")
                                      + ", \($0.failures) failures \($0.error ?? "")" } ?? "never sent"))
                    continue
                }
                toAgent.append(arrived - t0)
                if arrived - t0 > 0.25 {
                    let sent = arrivals.sentOf.withLock { $0[host] } ?? 0
                    say("#   intent \(index) slow: \(format((arrived - t0) * 1000, 1)) ms; the poll that brought it was sent \(format(t0 - sent, 2)) s before the request")
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

    static func rss(_ pid: pid_t) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// `count` calls, `width` at a time; results in index order.
    static func parallel<T: Sendable>(_ count: Int, _ width: Int, _ body: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var results = [T?](repeating: nil, count: count)
            var next = 0
            while next < min(width, count) {
                let index = next
                group.addTask { (index, try await body(index)) }
                next += 1
            }
            while let (index, value) = try await group.next() {
                results[index] = value
                if next < count {
                    let index = next
                    group.addTask { (index, try await body(index)) }
                    next += 1
                }
            }
            return results.map { $0! }
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

/// When each simulated agent's poll brought a new generation.
final class Arrivals: Sendable {
    let times = Mutex<[String: Double]>([:])
    let polls = Mutex<[String: Poll]>([:])
    let sentOf = Mutex<[String: Double]>([:])
}

struct Poll {
    var sent: Double
    var answered: Double?
    var failures: Int
    var error: String? = nil
}
