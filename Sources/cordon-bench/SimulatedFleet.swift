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

/// What the fleet benchmarks share: a real cordon-server on a real PostgreSQL, in a namespace of
/// their own, for agents simulated in this process that speak the real protocol over HTTPS.
/// Every simulated agent comes from 127.0.0.1, one address as behind a NAT, so the server's
/// per-address connection cap is lifted for the run.
final class SimulatedFleet: Sendable {
    static let port = 8443
    /// Real agents each hold their own connection; one client pool for 10,000 polls would make
    /// the simulator's own pool bookkeeping part of what is measured.
    static let pollShards = 16

    let lab: Lab
    let namespace: String
    let postgres: PostgresCluster
    let server: Child
    /// An admin token, from `cordon-server init`.
    let admin: String
    let ca: String
    let serverBinary: String
    let data: String
    let url = URL(string: "https://127.0.0.1:\(SimulatedFleet.port)")!

    /// `agents`: how many sockets each side will hold; the open-files limit is raised to match.
    init(lab: Lab, agents: Int) throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, Int(limit.rlim_cur) > agents + 1000 else {
            throw ValidationError("the open-files limit (\(limit.rlim_max)) is too low for \(agents) agents")
        }
        self.lab = lab
        namespace = try lab.namespace("server")
        postgres = try PostgresCluster(lab: lab, namespace: namespace, durable: true)
        serverBinary = (try DiscoveryScenario.cordonBinary() as NSString).deletingLastPathComponent + "/cordon-server"
        data = lab.directory + "/server-data"
        let initialised = try lab.run(namespace, [serverBinary, "init", "--data", data, "--database", postgres.url, "--name", "127.0.0.1"])
        guard initialised.succeeded, let admin = initialised.stdout.split(separator: "\n").last.map(String.init) else {
            throw ValidationError("init: \(initialised.stderr)")
        }
        self.admin = admin
        server = try lab.spawn(namespace, [serverBinary, "run", "--data", data, "--database", postgres.url, "--listen", "127.0.0.1:\(Self.port)",
                                           "--max-connections-per-address", "100000"],
                               log: lab.directory + "/server.log")
        ca = try String(contentsOfFile: data + "/ca.pem", encoding: .utf8)
    }

    /// An enrollment secret whose hosts get `tags` ("k=v,...").
    func secret(tags: String) throws -> String {
        let run = try lab.run(namespace, [serverBinary, "enroll-secret", "create", "--data", data, "--database", postgres.url, "--tags", tags])
        guard run.succeeded, let secret = run.stdout.split(separator: "\n").last.map(String.init) else { throw ValidationError("enroll-secret: \(run.stderr)") }
        return secret
    }

    /// Clients made inside the server's namespace (their event-loop threads, and so their
    /// sockets, are there): `body` runs on such a thread.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T { try lab.inNamespace(namespace, body) }

    func client(credential: String? = nil, connections: Int) throws -> FleetClient {
        try FleetClient(server: url, caPEM: ca, credential: credential, connectTimeout: 10, connections: connections)
    }

    /// Waits for the server to answer.
    func ready(_ api: FleetClient) throws {
        _ = try FleetBenchmark.wait { () async throws -> Bool? in (try? await api.raw(.GET, "/healthz", timeout: 2)) != nil ? true : nil }
    }

    var rss: Int { Self.rss(server.pid) }

    /// Resident memory of a process, KiB.
    static func rss(_ pid: pid_t) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// The server's peak resident memory (KiB) since the last `resetPeak`.
    var peakRSS: Int { ProcessSample.peakRSS(server.pid) / 1024 }

    /// Starts counting the peak anew (`clear_refs` 5, Linux 4.0 and later).
    func resetPeak() { try? "5".write(toFile: "/proc/\(server.pid)/clear_refs", atomically: false, encoding: .utf8) }

    /// Enrolls `count` simulated hosts with `secret`; (host id, credential) in index order.
    static func enroll(_ client: FleetClient, secret: String, count: Int, concurrency: Int, name: @escaping @Sendable (Int) -> String,
                       address: @escaping @Sendable (Int) -> String,
                       tags: @escaping @Sendable (Int) -> [String: String] = { _ in [:] }) throws -> [(id: String, credential: String)] {
        try FleetBenchmark.wait { () async throws -> [(id: String, credential: String)]? in
            try await Self.parallel(count, concurrency) { index in
                let request = EnrollRequest(secret: secret, hostname: name(index), machineID: "m-\(name(index))", addresses: [address(index)],
                                            agentVersion: "sim", tags: tags(index))
                let answer = try await client.call(.POST, "/agent/v1/enroll", body: request, timeout: 60, as: EnrollResponse.self)
                return (answer.hostID, answer.credential)
            }
        }
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

    /// A simulated agent's report after `generation`, enforcing `digest` (nil: discovery).
    static func report(generation: Int64, result: AppliedGeneration?, digest: String?, isolated: Bool = false, flows: [FlowRecord] = []) -> AgentReport {
        let status = AgentStatus(mode: digest == nil ? "discovery" : "enforce", isolated: isolated, rulesetVersion: digest == nil ? nil : 1,
                                 rulesetDigest: digest, lostEvents: 0, guardRestores: 0, guardEscalations: 0, flows: flows.count, agentVersion: "sim",
                                 addresses: [])
        return AgentReport(status: status, observed: isolated ? .isolated : .released, appliedGeneration: generation, applied: result, local: nil,
                           log: [], flows: flows)
    }
}

/// Every simulated agent holding its long poll of `/agent/v1/state`, as the real agent does;
/// each new document is timed and handed to `apply`, which answers with the report the agent
/// sends (nil: none).
final class SimulatedPolls: Sendable {
    struct Poll {
        var sent: Double
        var answered: Double?
        var failures = 0
        /// The last failure of this host's poll.
        var error: String?
    }

    /// Reports that failed (each sent again), and the last error.
    let reportFailures = Mutex<(count: Int, last: String?)>((0, nil))

    /// When each host's poll last brought a new generation, and when that poll was sent.
    let arrivals = Mutex<[String: (at: Double, sent: Double, document: DesiredState)]>([:])
    let polls = Mutex<[String: Poll]>([:])
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Starts polling for every host of `hosts`, spread over `clients`.
    func start(_ hosts: [(id: String, credential: String)], clients: [FleetClient],
               apply: @escaping @Sendable (Int, DesiredState) -> AgentReport?) {
        let task = Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                for (index, host) in hosts.enumerated() {
                    let client = clients[index % clients.count]
                    group.addTask { [self] in
                        var after: Int64 = 0
                        let auth = [("Authorization", "Bearer \(host.credential)")]
                        while !Task.isCancelled {
                            let sent = monotonic()
                            polls.withLock { $0[host.id, default: Poll(sent: sent)].sent = sent; $0[host.id]?.answered = nil }
                            let document: DesiredState
                            do {
                                document = try await client.call(.GET, "/agent/v1/state?after=\(after)&wait=25", headers: auth, timeout: 60, as: DesiredState.self)
                            } catch {
                                polls.withLock { $0[host.id]?.failures += 1; $0[host.id]?.error = "\(error)" }
                                try? await Task.sleep(for: .milliseconds(500))
                                continue
                            }
                            let now = monotonic()
                            polls.withLock { $0[host.id]?.answered = now }
                            guard document.generation > after else { continue }
                            after = document.generation
                            arrivals.withLock { $0[host.id] = (now, sent, document) }
                            // A report that fails is sent again, as the agent's outbox does.
                            guard let report = apply(index, document) else { continue }
                            for attempt in 1...5 {
                                do {
                                    _ = try await client.call(.POST, "/agent/v1/report", body: report, headers: auth, timeout: 60, as: ReportResponse.self)
                                    break
                                } catch {
                                    reportFailures.withLock { $0.count += 1; $0.last = "\(error)" }
                                    try? await Task.sleep(for: .milliseconds(200 * attempt))
                                }
                            }
                        }
                    }
                }
            }
        }
        self.task.withLock { $0 = task }
    }

    func stop() { task.withLock { $0?.cancel() } }

    /// What the poll of `host` was doing, for a request that did not reach it.
    func describe(_ host: String) -> String {
        let now = monotonic()
        guard let poll = polls.withLock({ $0[host] }) else { return "never sent" }
        return "sent \(format(now - poll.sent, 2)) s ago, " + (poll.answered.map { "answered \(format(now - $0, 2)) s ago" } ?? "in flight")
            + ", \(poll.failures) failures \(poll.error ?? "")"
    }

    /// Waits until `count` hosts are connected (seen within the server's window).
    static func connected(_ api: FleetClient, count: Int, within seconds: Double) throws -> Int {
        let started = monotonic()
        var connected = 0
        while monotonic() - started < seconds {
            // Every page: the list holds at most 1,000 hosts at a time.
            connected = try FleetBenchmark.wait { () async throws -> Int? in
                var total = 0, offset = 0
                while true {
                    let page = try await api.call(.GET, "/api/v1/hosts?limit=1000&offset=\(offset)", timeout: 60, as: Page<HostView>.self).items
                    total += page.filter(\.connected).count
                    offset += page.count
                    if page.count < 1000 { return total }
                }
            }
            if connected >= count { break }
            Thread.sleep(forTimeInterval: 1)
        }
        return connected
    }
}
