import ArgumentParser
import CordonAgent
import CordonCore
import CordonFleetClient
import CordonLab
import CordonWire
import Foundation

/// `POST /api/v1/proposals` and `POST /api/v1/reviews` (what `cordon fleet propose` and
/// `cordon fleet review` send) for a tier whose hosts uploaded their records through the real
/// report path: wall time of each request, and the server's peak RSS during it.
///
/// Each host of the tier has `--aggregates` flows: the standard networks (DNS, NTP, SSH in),
/// a database tier it reaches east-west (enrolled hosts of their own), a common pool of
/// services each host reaches with 95 % likelihood, and the rest from a pool of rare endpoints,
/// each seen on a few percent of the tier (the outliers).
struct FleetProposeBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-propose",
                                                    abstract: "Fleet propose and review over the merged record of many hosts on a real cordon-server (needs root).")

    @Option(help: "Hosts of the tier.") var hosts: Int = 1000
    @Option(help: "Flow aggregates per host.") var aggregates: Int = 2000
    @Option(help: "Runs of each request (medians reported).") var runs: Int = 3
    @Option(help: "Reports in flight while uploading.") var concurrency: Int = 8

    static let databases = 20
    static let rarePool = 5000
    static let rarePerHost = 100

    func run() throws {
        guard (1...5000).contains(hosts), (Self.databases + 3 + Self.rarePerHost...20_000).contains(aggregates), (1...20).contains(runs),
              (1...256).contains(concurrency) else { throw ValidationError("an option is out of range") }
        say("# cordon-bench fleet-propose --hosts \(hosts) --aggregates \(aggregates) --runs \(runs) --concurrency \(concurrency)")
        guard let networksFile = StandardNetworks.locate(), let standard = try? String(contentsOfFile: networksFile, encoding: .utf8) else {
            throw ValidationError("the standard networks file is not found")
        }
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try SimulatedFleet(lab: lab, agents: hosts + Self.databases)
        let webSecret = try fleet.secret(tags: "tier=web,env=prod"), dbSecret = try fleet.secret(tags: "tier=db,env=prod")
        let (hosts, aggregates, runs, concurrency) = (self.hosts, self.aggregates, self.runs, self.concurrency)

        try fleet.run {
            let client = try fleet.client(connections: 2 * concurrency)
            let api = try fleet.client(credential: fleet.admin, connections: 4)
            try fleet.ready(api)
            _ = try SimulatedFleet.enroll(client, secret: dbSecret, count: Self.databases, concurrency: concurrency, name: { "db-\($0)" },
                                         address: { Self.database($0).description })
            let tier = try SimulatedFleet.enroll(client, secret: webSecret, count: hosts, concurrency: 64, name: { "web-\($0)" },
                                                 address: { Self.address($0).description })
            var started = monotonic()
            _ = try FleetBenchmark.wait { () async throws -> Bool? in
                _ = try await SimulatedFleet.parallel(hosts, concurrency) { index in
                    let report = SimulatedFleet.report(generation: 0, result: nil, digest: nil, flows: Self.flows(host: index, count: aggregates))
                    _ = try await client.call(.POST, "/agent/v1/report", body: report, headers: [("Authorization", "Bearer \(tier[index].credential)")],
                                              timeout: 300, as: ReportResponse.self)
                    return true
                }
                return true
            }
            let rows = try fleet.postgres.psql("SELECT count(*) FROM host_flows")
            let size = try fleet.postgres.psql("SELECT pg_size_pretty(pg_total_relation_size('host_flows'))")
            say("#   \(hosts) hosts uploaded \(rows) flow rows (\(size)) in \(format(monotonic() - started, 1)) s; server RSS \(format(Double(fleet.rss) / 1024, 1)) MiB")

            // The floor: PostgreSQL alone producing the rows propose and review read, as text
            // (COPY, its cheapest path), with nothing decoding them.
            var floor: [Double] = []
            for _ in 1...runs {
                let t0 = monotonic()
                _ = try fleet.postgres.psql("COPY (SELECT flow_key, first_seen, last_seen, connections, packets, bytes, remote_names FROM host_flows) TO '/dev/null'")
                floor.append(monotonic() - t0)
            }
            say("#   COPY of every row to /dev/null: \(floor.map { format($0, 2) + " s" }.joined(separator: ", "))")
            let selector = #"tier == "web""#
            var proposeSeconds: [Double] = [], proposePeak: [Double] = [], reviewSeconds: [Double] = [], reviewPeak: [Double] = []
            var proposal: ProposalResult?
            for run in 1...runs {
                fleet.resetPeak()
                started = monotonic()
                let result = try FleetBenchmark.wait { () async throws -> ProposalResult? in
                    try await api.call(.POST, "/api/v1/proposals", body: ProposalRequest(selector: selector, since: "7d", minCoverage: 50, standardNetworks: standard),
                                       timeout: 300, as: ProposalResult.self)
                }
                proposeSeconds.append(monotonic() - started)
                proposePeak.append(Double(fleet.peakRSS) / 1024)
                proposal = result
                say("#   propose run \(run): \(format(proposeSeconds.last!, 2)) s, peak RSS \(format(proposePeak.last!, 0)) MiB; \(result.candidates) candidates, "
                    + "\(result.outliers) outliers, \(result.text.utf8.count / 1024) KiB of YAML")
            }
            let text = proposal!.text
            var reviewed: ReviewResult?
            for run in 1...runs {
                fleet.resetPeak()
                started = monotonic()
                let result = try FleetBenchmark.wait { () async throws -> ReviewResult? in
                    try await api.call(.POST, "/api/v1/reviews", body: ReviewRequest(content: text, selector: selector, since: "7d"), timeout: 300,
                                       as: ReviewResult.self)
                }
                reviewSeconds.append(monotonic() - started)
                reviewPeak.append(Double(fleet.peakRSS) / 1024)
                reviewed = result
                say("#   review run \(run): \(format(reviewSeconds.last!, 2)) s, peak RSS \(format(reviewPeak.last!, 0)) MiB; "
                    + "\(result.hosts.count) hosts, \(result.hosts.filter { $0.rejectedCount > 0 }.count) would lose traffic")
            }
            say("| measurement (\(hosts) hosts × \(aggregates) aggregates, \(rows) rows in PostgreSQL) | median of \(runs) | server peak RSS |")
            say("|---|---|---|")
            say("| fleet propose (`POST /api/v1/proposals`) | \(format(median(proposeSeconds), 2)) s | \(format(median(proposePeak), 0)) MiB |")
            say("| fleet review of that proposal (`POST /api/v1/reviews`) | \(format(median(reviewSeconds), 2)) s | \(format(median(reviewPeak), 0)) MiB |")
            say("| floor: PostgreSQL's COPY of the same rows to /dev/null | \(format(median(floor), 2)) s | |")
            say("| per host: propose / review | \(format(median(proposeSeconds) / Double(hosts) * 1000, 2)) ms / \(format(median(reviewSeconds) / Double(hosts) * 1000, 2)) ms | |")
            _ = reviewed
        }
    }

    /// Host `index`'s address: 2001:db8:1::/64.
    static func address(_ index: Int) -> IPAddress { IPAddress("2001:db8:1::\(String(index + 1, radix: 16))")! }
    static func database(_ index: Int) -> IPAddress { IPAddress("2001:db8:2::\(String(index + 1, radix: 16))")! }

    /// A deterministic record of `count` aggregates for host `index`, over the last week.
    static func flows(host index: Int, count: Int) -> [FlowRecord] {
        let local = address(index)
        let now = TimeText.now()
        var rows: [FlowRecord] = []
        func add(_ direction: Direction, _ transport: UInt8, _ remote: IPAddress, _ port: UInt16, names: [String] = []) {
            let seed = UInt64(index &* 2_654_435_761) ^ UInt64(rows.count &* 40_503)
            let key = FlowKey(direction: direction, transport: transport, local: local, remote: IPPrefix(remote), service: port)
            rows.append(FlowRecord(key: key, stats: FlowStats(connections: 1 + seed % 500, packets: 10 + seed % 5000, bytes: 1000 + seed % 500_000,
                                                              firstSeen: now - 6 * 86_400 + Int64(seed % 3600), lastSeen: now - Int64(seed % 3600)),
                                   remoteNames: names))
        }
        add(.outbound, IPProtocolNumber.udp, IPAddress("2001:db8:53::1")!, 53)
        add(.outbound, IPProtocolNumber.udp, IPAddress("2001:db8:123::1")!, 123)
        add(.inbound, IPProtocolNumber.tcp, IPAddress("2001:db8:22::\(String(index % 50 + 1, radix: 16))")!, 22)
        for db in 0..<databases { add(.outbound, IPProtocolNumber.tcp, database(db), 5432) }
        let common = count - rows.count - rarePerHost
        for k in 0..<common where (index &* 31 &+ k &* 17) % 20 != 0 {
            add(.outbound, IPProtocolNumber.tcp, IPAddress("2001:db8:c::\(String(k + 1, radix: 16))")!, k % 3 == 0 ? 443 : UInt16(8000 + k % 100),
                names: k % 3 == 0 ? ["svc-\(k).example.com"] : [])
        }
        var j = 0
        while rows.count < count {
            let k = (index &* 37 &+ j &* 101) % rarePool
            add(.outbound, IPProtocolNumber.tcp, IPAddress("2001:db8:e::\(String(k + 1, radix: 16))")!, UInt16(9000 + k % 500))
            j += 1
        }
        return rows
    }
}
