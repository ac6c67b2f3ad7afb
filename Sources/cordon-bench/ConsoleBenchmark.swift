import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonLab
import CordonWire
import Foundation

/// The console at fleet size, on a real cordon-server and PostgreSQL: the dependency map for
/// `--hosts` hosts in `--groups` tag groups (each group talks to its own 50 services: 10,000
/// edges at 2,000 × 200), one edge with 100,000 flows behind it, and, with `--browser`, the
/// map's first render and its pan-and-zoom frame rate and the fleet page's first render with
/// `--fleet-hosts` hosts, in headless Chromium (`Tests/Browser/console_bench.py`).
struct ConsoleBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "console",
                                                    abstract: "The console's map and pages at fleet size on a real cordon-server (needs root).")

    @Option(help: "Hosts with flows, on the map.") var hosts: Int = 2000
    @Option(help: "Tag groups they fall in.") var groups: Int = 200
    @Option(help: "Hosts in the fleet page (the rest enrolled without flows).") var fleetHosts: Int = 10_000
    @Option(help: "Runs of each request (medians and p95 reported).") var runs: Int = 20
    @Flag(help: "Also measure in headless Chromium (needs bash .ci/setup --tests).") var browser = false

    static let servicesPerGroup = 50
    static let sharedPerHost = 50

    func run() throws {
        guard (10...5000).contains(hosts), (1...1000).contains(groups), (hosts...20_000).contains(fleetHosts), (3...200).contains(runs) else {
            throw ValidationError("an option is out of range")
        }
        say("# cordon-bench console --hosts \(hosts) --groups \(groups) --fleet-hosts \(fleetHosts) --runs \(runs)\(browser ? " --browser" : "")")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try SimulatedFleet(lab: lab, agents: fleetHosts)
        let secret = try fleet.secret(tags: "env=prod")
        let viewer = try lab.run(fleet.namespace, [fleet.serverBinary, "token", "create", "--data", fleet.data, "--database", fleet.postgres.url,
                                                   "--role", "viewer", "--name", "bench"]).stdout.split(separator: "\n").last.map(String.init) ?? ""
        let (hosts, groups, fleetHosts, runs) = (self.hosts, self.groups, self.fleetHosts, self.runs)
        let script = browser ? Self.script() : nil
        if browser, script == nil { throw ValidationError("Tests/Browser/console_bench.py is not found above this binary") }

        try fleet.run {
            let client = try fleet.client(connections: 32)
            let api = try fleet.client(credential: fleet.admin, connections: 4)
            try fleet.ready(api)
            let enrolled = try SimulatedFleet.enroll(client, secret: secret, count: fleetHosts, concurrency: 64, name: { String(format: "host-%05d", $0) },
                                                     address: { Self.address($0).description },
                                                     tags: { ["grp": String(format: "g%03d", $0 % groups)] })
            // `count` hosts upload their week of flows, the next ones in turn. Uploads go on while
            // people look: before each timed map, some hosts upload again (untimed), so each map
            // reloads the hosts that moved, as on a live fleet.
            var next = 0
            func upload(_ count: Int) throws {
                let batch = (0..<count).map { (next + $0) % hosts }
                next += count
                _ = try FleetBenchmark.wait { () async throws -> Bool? in
                    _ = try await SimulatedFleet.parallel(batch.count, 16) { at in
                        let index = batch[at]
                        let report = SimulatedFleet.report(generation: 0, result: nil, digest: nil, flows: Self.flows(host: index, groups: groups))
                        _ = try await client.call(.POST, "/agent/v1/report", body: report, headers: [("Authorization", "Bearer \(enrolled[index].credential)")],
                                                  timeout: 300, as: ReportResponse.self)
                        return true
                    }
                    return true
                }
            }
            var started = monotonic()
            try upload(hosts)
            let rows = try fleet.postgres.psql("SELECT count(*) FROM host_flows")
            say("#   \(fleetHosts) hosts enrolled, \(hosts) uploaded \(rows) flow rows in \(format(monotonic() - started, 1)) s")

            func timed(_ path: String, churn: Int = 0) throws -> (seconds: [Double], body: Data) {
                var seconds: [Double] = [], body = Data()
                for _ in 0..<runs {
                    try upload(churn)
                    started = monotonic()
                    body = try FleetBenchmark.wait { () async throws -> Data? in try await api.raw(.GET, path, timeout: 120) }
                    seconds.append(monotonic() - started)
                }
                return (seconds, body)
            }
            // The first map after every host uploaded reads every row (a replica's first read).
            let first = try timed("/api/v1/map?group=grp&window=7d").seconds[0]
            let churn = max(1, hosts / 50)
            let map = try timed("/api/v1/map?group=grp&window=7d", churn: churn)
            let view = try Wire.decode(MapView.self, from: map.body)
            let gzip = try Self.gzipSize(map.body, lab: lab)
            // Every group's edge to the shared service: one group (env=prod) holds every host's.
            let wide = try Wire.decode(MapView.self, from: try timed("/api/v1/map?group=env&window=7d").body)
            guard let edge = wide.edges.first(where: { $0.to == "somewhere:outbound tcp/8080" }) else { throw ValidationError("no shared edge on the map") }
            let query = edge.id.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let flows = try timed("/api/v1/map/flows?group=env&window=7d&limit=50&edge=\(query)")
            let page = try Wire.decode(Page<MapFlow>.self, from: flows.body)
            say("| measurement (\(hosts) hosts in \(groups) groups, \(rows) flow rows; \(runs) runs) | median | p95 | goal |")
            say("|---|---|---|---|")
            say("| map query, 7-day window (`GET /api/v1/map`), \(churn) hosts uploaded before each: \(view.nodes.count) nodes, \(view.edges.count) edges drawn, \(view.hiddenEdges) left out "
                + "| \(format(median(map.seconds) * 1000, 0)) ms | \(format(percentile(map.seconds, 95) * 1000, 0)) ms | p95 < 300 ms |")
            say("| the first map after every host uploaded (every row read into memory) | \(format(first * 1000, 0)) ms | | |")
            say("| map payload | \(format(Double(map.body.count) / 1024, 0)) KiB raw, \(format(Double(gzip) / 1024, 0)) KiB gzip | | < 1 MB compressed |")
            say("| an edge's first page of flows, \(page.total ?? 0) behind it (`GET /api/v1/map/flows`) "
                + "| \(format(median(flows.seconds) * 1000, 0)) ms | \(format(percentile(flows.seconds, 95) * 1000, 0)) ms | < 300 ms |")
            guard let script else { return }
            let measured = try lab.run(fleet.namespace, ["env", "SE_OFFLINE=true", "HOME=\(lab.directory)", "CONSOLE_URL=https://127.0.0.1:\(SimulatedFleet.port)",
                                                         "CONSOLE_TOKEN=\(viewer)", "CONSOLE_PROFILE=\(lab.directory)/chromium",
                                                         "CONSOLE_SPKI=\(try Self.spki(fleet.data + "/server.pem", lab: lab))", "CONSOLE_RUNS=\(min(runs, 10))",
                                                         "/opt/cordon-test-peers/selenium/bin/python3", script], timeout: 900)
            guard measured.succeeded else { throw ValidationError("the browser measurement failed:\n\(measured.stdout)\(measured.stderr.suffix(3000))") }
            say(measured.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// The measuring script, in the source tree the binary was built in.
    static func script() -> String? {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent("Tests/Browser/console_bench.py").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return nil
    }

    static func gzipSize(_ data: Data, lab: Lab) throws -> Int {
        let file = lab.directory + "/map.json"
        try data.write(to: URL(fileURLWithPath: file))
        return Int(try lab.run(nil, ["sh", "-c", "gzip -c \"$0\" | wc -c", file]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    static func spki(_ certificate: String, lab: Lab) throws -> String {
        try lab.run(nil, ["sh", "-c", "openssl x509 -in \"$0\" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
                          certificate]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func address(_ index: Int) -> IPAddress { IPAddress("2001:db8:5::\(String(index + 1, radix: 16))")! }

    /// Host `index`'s week: its group's 50 services (named, so each is a node of its own), one
    /// east-west service in the next group, DNS, and 50 peers on a shared service (tcp/8080).
    static func flows(host index: Int, groups: Int) -> [FlowRecord] {
        let group = index % groups, local = address(index), now = TimeText.now()
        var rows: [FlowRecord] = []
        func add(_ remote: IPAddress, _ port: UInt16, names: [String] = [], transport: UInt8 = IPProtocolNumber.tcp, verdict: FlowVerdict = .allowed) {
            let seed = UInt64(index &* 2_654_435_761) ^ UInt64(rows.count &* 40_503)
            let key = FlowKey(direction: .outbound, transport: transport, local: local, remote: IPPrefix(remote), service: port, verdict: verdict)
            rows.append(FlowRecord(key: key, stats: FlowStats(connections: 1 + seed % 500, packets: 10 + seed % 5000, bytes: 1000 + seed % 500_000,
                                                              firstSeen: now - 6 * 86_400, lastSeen: now - Int64(seed % 3600)), remoteNames: names))
        }
        add(IPAddress("2001:db8:53::1")!, 53, transport: IPProtocolNumber.udp)
        for k in 0..<servicesPerGroup {
            let service = group * servicesPerGroup + k
            add(IPAddress("2001:db8:6::\(String(service + 1, radix: 16))")!, 443, names: ["svc-\(service).example.com"], verdict: k == 0 ? .rejected : .allowed)
        }
        add(address((index + 1) % groups), 5432)
        for k in 0..<sharedPerHost {
            let n = index * sharedPerHost + k + 1
            add(IPAddress("2001:db8:7::\(String(n >> 16, radix: 16)):\(String(n & 0xffff, radix: 16))")!, 8080)
        }
        return rows
    }
}
