import CordonCore
import CordonLab
import CordonServer
import CordonWire
import Foundation
import Logging
import PostgresNIO
import Testing

/// A database as the 0.2.0 server left it (its schema, its rows) migrated forward by this one.
@Suite(.serialized) struct ServerMigrationTests {
    @Test("0.2.0's isolation columns become each host's desired-state document; local intents keep their operator and get their origin")
    func desiredDocument() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let lab = try Lab()
        defer { lab.cleanup() }
        let cluster = try PostgresCluster(lab: lab, namespace: nil, port: Int.random(in: 20_000...29_999))
        let logger = Logger(label: "migration-test")
        let client = PostgresClient(configuration: .init(host: "127.0.0.1", port: cluster.port, username: "postgres", password: nil,
                                                     database: "postgres", tls: .disable), backgroundLogger: StoreConcurrencyTests.Database.quiet)
        let running = Task { await client.run() }
        defer { running.cancel() }
        // The schema 0.2.0 shipped, and what its server wrote: a host isolated by an analyst, one
        // isolated locally, one never touched.
        try await Migrations.migrate(client, logger: logger, through: "003-tag-sources")
        let analyst = UUID(), local = UUID(), untouched = UUID(), intent = UUID(), localIntent = UUID()
        for (id, name) in [(analyst, "web-1"), (local, "web-2"), (untouched, "db-1")] {
            try await client.query("""
                INSERT INTO hosts (id, hostname, machine_id, addresses, agent_version, tags, credential_hash)
                VALUES (\(id), \(name), \(name), '[]', '0.2.0', '{}', \(name + "-credential"))
                """, logger: logger)
        }
        try await client.query("""
            UPDATE hosts SET desired_state = 'isolated', generation = 3, desired_intent = \(intent), desired_reason = 'alert 7',
              desired_by = 'rita', observed_state = 'isolated', observed_generation = 3 WHERE id = \(analyst)
            """, logger: logger)
        try await client.query("""
            UPDATE hosts SET desired_state = 'isolated', generation = 1, desired_intent = \(localIntent), desired_reason = 'on the host',
              desired_by = 'local: ivy' WHERE id = \(local)
            """, logger: logger)
        try await client.query("""
            INSERT INTO intents (id, host_id, generation, state, previous_state, status, requested_by, reason)
            VALUES (\(intent), \(analyst), 3, 'isolated', 'released', 'succeeded', 'rita', 'alert 7'),
                   (\(localIntent), \(local), 1, 'isolated', 'released', 'succeeded', 'local: ivy', 'on the host')
            """, logger: logger)

        // Flow rows as 0.2.0 stored them, each a JSON record: one with names, one from an agent
        // older still (no names key at all).
        let named = FlowRecord(key: FlowKey(direction: .outbound, transport: IPProtocolNumber.tcp, local: IPAddress("192.0.2.10")!,
                                            remote: IPPrefix(IPAddress("198.51.100.7")!), port: 443),
                               stats: FlowStats(connections: 12, packets: 90, bytes: 9000, firstSeen: 1_790_000_000, lastSeen: 1_790_086_400),
                               remoteNames: ["api.example.com", "cdn.example.com"])
        let ssh = FlowRecord(key: FlowKey(direction: .inbound, transport: IPProtocolNumber.tcp, local: IPAddress("2001:db8::10")!,
                                          remote: IPPrefix(IPAddress("2001:db8::22")!), port: 22),
                             stats: FlowStats(connections: 3, packets: 30, bytes: 3000, firstSeen: 1_790_000_100, lastSeen: 1_790_000_200))
        var oldJSON = try #require(try JSONSerialization.jsonObject(with: Wire.encode(ssh)) as? [String: Any])
        oldJSON["remote_names"] = nil
        let sshText = String(decoding: try JSONSerialization.data(withJSONObject: oldJSON), as: UTF8.self)
        for (key, text, record) in [("outbound|tcp|192.0.2.10|-|198.51.100.7|443|-|-|allowed", String(decoding: Wire.encode(named), as: UTF8.self), named),
                                    ("inbound|tcp|2001:db8::10|22|2001:db8::22|-|-|-|allowed", sshText, ssh)] {
            try await client.query("""
                INSERT INTO host_flows (host_id, flow_key, record, last_seen, connections, packets, bytes)
                VALUES (\(analyst), \(key), \(text), \(record.lastSeen), \(Int64(record.connections)), \(Int64(record.packets)), \(Int64(record.bytes)))
                """, logger: logger)
        }

        let applied = try await Migrations.migrate(client, logger: logger)
        #expect(applied.first == "004-desired-document", "\(applied)")
        let stores = Stores(client: client, logger: logger)
        let byAnalyst = try #require(try await stores.desired.desired(host: analyst))
        #expect(byAnalyst == DesiredState(generation: 3, isolation: .init(state: .isolated, origin: .server, intentID: intent.uuidString.lowercased(),
                                                                         reason: "alert 7", requestedBy: "rita")))
        let byHost = try #require(try await stores.desired.desired(host: local))
        #expect(byHost.isolation.origin == .local && byHost.isolation.requestedBy == "ivy" && byHost.generation == 1)
        #expect(byHost.legacy.requestedBy == "local: ivy", "an agent before 0.3.0 still recognises its own change")
        #expect(try await stores.desired.desired(host: untouched) == .initial)
        let intents = try await stores.desired.intents(host: local, status: nil, limit: 10)
        #expect(intents.map(\.origin) == [.local] && intents.map(\.requestedBy) == ["ivy"] && intents.map(\.kind) == [.isolation])
        // The flow rows read back as they were uploaded, from their columns.
        #expect(try await stores.flows.flows(host: analyst) == [ssh, named])
        // Typed, as propose and review read them: in no particular order, so ordered here by peer.
        let typed = try await stores.flows.uploaded(host: analyst).sorted { $0.key.remote < $1.key.remote }
        #expect(typed == [ssh, named].compactMap(FleetFlow.init).sorted { $0.key.remote < $1.key.remote }, "typed, as propose and review read them")
        #expect(typed.count == 2 && typed.contains { $0.names == ["api.example.com", "cdn.example.com"] })
        // The host view reads the document.
        #expect(try await stores.hosts.host(analyst)?.isolation.desired == .isolated)
        // The constraint follows the kind: a mode intent takes a mode, not an isolation word.
        await #expect(throws: (any Error).self) {
            try await client.query("""
                INSERT INTO intents (id, host_id, kind, generation, state, previous_state, status, requested_by, reason)
                VALUES (\(UUID()), \(analyst), 'mode', 4, 'isolated', 'released', 'pending', 'x', 'x')
                """, logger: logger)
        }
        // An isolation on the migrated document works as on a new one.
        let token = try await stores.tokens.create(name: "r", role: .responder).id
        let release = try await stores.desired.request(host: analyst, IsolationRequest(state: .released, reason: "done"), by: "rita", tokenID: token,
                                                       idempotencyKey: nil)
        #expect(release.generation == 4 && release.status == .pending)
    }
}
