import CordonCore
import CordonLab
import CordonServer
import CordonWire
import Foundation
import Logging
import PostgresNIO
import Testing

/// A fleet propose merged by PostgreSQL says what the same proposal merged in memory says.
@Suite(.serialized) struct FleetProposalStoreTests {
    static func flow(_ direction: Direction, _ local: String, _ remote: String, _ port: UInt16, connections: UInt64, lastSeen: Int64 = 1_800_000_000,
                     names: [String] = [], verdict: FlowVerdict = .allowed) -> FlowRecord {
        FlowRecord(key: FlowKey(direction: direction, transport: IPProtocolNumber.tcp, local: IPAddress(local)!, remote: IPPrefix(IPAddress(remote)!),
                                port: port, verdict: verdict),
                   stats: FlowStats(connections: connections, packets: connections * 10, bytes: connections * 1000, firstSeen: lastSeen - 86_400,
                                    lastSeen: lastSeen),
                   remoteNames: names)
    }

    @Test("propose through PostgreSQL's merge and through the in-memory one give the same file, coverage and outliers")
    func mergedInPostgresAsInMemory() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let lab = try Lab()
        defer { lab.cleanup() }
        let cluster = try PostgresCluster(lab: lab, namespace: nil, port: Int.random(in: 20_000...29_999))
        let logger = Logger(label: "proposal-store-test")
        let client = PostgresClient(configuration: .init(host: "127.0.0.1", port: cluster.port, username: "postgres", password: nil,
                                                     database: "postgres", tls: .disable), backgroundLogger: StoreConcurrencyTests.Database.quiet)
        let running = Task { await client.run() }
        defer { running.cancel() }
        try await Migrations.migrate(client, logger: logger)
        let stores = Stores(client: client, logger: logger)
        // Three web hosts: HTTPS to one API (two by name), a cache on two of them, an outlier
        // each on web-1 (two ports) and web-3, SSH in from two admins, DNS; a rejected flow and
        // an old one that do not count.
        let hosts = (1...3).map { _ in UUID() }
        for (index, id) in hosts.enumerated() {
            try await client.query("""
                INSERT INTO hosts (id, hostname, machine_id, addresses, agent_version, tags, credential_hash)
                VALUES (\(id), \("web-\(index + 1)"), \("m\(index)"), '[]', '0.3.0', '{}', \("c\(index)"))
                """, logger: logger)
        }
        let local = ["192.0.2.11", "192.0.2.12", "2001:db8::13"]
        let api = ["198.51.100.20", "198.51.100.20", "2001:db8:5::20"]
        var uploads: [[FlowRecord]] = []
        for n in 0..<3 {
            var flows = [Self.flow(.outbound, local[n], api[n], 443, connections: UInt64(10 * (n + 1)), names: n < 2 ? ["api.example.com"] : []),
                         Self.flow(.outbound, local[n], n == 2 ? "2001:db8::53" : "192.0.2.53", 53, connections: 5),
                         Self.flow(.inbound, local[n], n == 2 ? "2001:db8:22::1" : "203.0.113.5", 22, connections: 2),
                         Self.flow(.outbound, local[n], "203.0.113.99", 8443, connections: 1, verdict: .rejected),
                         Self.flow(.outbound, local[n], "203.0.113.98", 9000, connections: 1, lastSeen: 1_600_000_000)]
            if n < 2 { flows.append(Self.flow(.outbound, local[n], "198.51.100.30", 6379, connections: 40)) }
            if n == 0 { flows += [Self.flow(.outbound, local[n], "203.0.113.40", 5000, connections: 7), Self.flow(.outbound, local[n], "203.0.113.41", 5001, connections: 3)] }
            if n == 2 { flows.append(Self.flow(.outbound, local[n], "2001:db8:7::40", 5002, connections: 4)) }
            try await stores.flows.upsert(host: hosts[n], flows: flows)
            uploads.append(flows)
        }
        let standard = try RulesetParser.parse(try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Rulesets/standard-networks.yaml").path, encoding: .utf8), file: "standard-networks.yaml")
        let since: Int64 = 1_700_000_000
        let names = (1...3).map { "web-\($0)" }
        let shared = try await stores.flows.shared(hosts: hosts, since: since)
        #expect(shared.reduce(0) { $0 + $1.hosts.count } == uploads.reduce(0) { $0 + $1.count } - 6, "every allowed, recent row once: \(shared.count)")
        let draft = FleetProposal.draft(selector: "all()", hostNames: names, shared: shared, peers: [], since: since, minCoverage: 50, standard: standard,
                                        names: ServiceNames())
        let rows = try await stores.flows.rows(hosts: hosts, of: draft.outlierIDs, since: since)
        let fromPostgres = FleetProposal.finish(draft, outliers: rows)
        let inMemory = FleetProposal.propose(selector: "all()", hosts: zip(names, uploads).map { FleetProposal.Host(name: $0, flows: $1) }, peers: [],
                                             since: since, minCoverage: 50, standard: standard, names: ServiceNames())
        #expect(fromPostgres.text == inMemory.text)
        #expect(fromPostgres.outliers == 3 && fromPostgres.candidates == 2 && fromPostgres.flows == inMemory.flows, "\(fromPostgres.text)")
        #expect(fromPostgres.text.contains("#   web-1: outbound tcp/5000") && fromPostgres.text.contains("#   web-3: outbound tcp/5002"))
        #expect(fromPostgres.text.contains("api.example.com") && fromPostgres.text.contains("seen on 3 of 3 hosts"))
    }
}
