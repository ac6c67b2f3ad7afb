import CordonCore
import CordonLab
import CordonServer
import CordonWire
import Foundation
import Testing

/// The map's sums from the rows kept in memory against the same flows classified one by one in Swift
/// (`FleetFlowStore`'s default, which the route tests use): the same graph, the same edge
/// pages, for several views, and after rows stored before the map's columns are classified.
@Suite(.serialized) struct MapQueryTests {
    /// The default implementations over PostgreSQL's rows: every flow read and placed in Swift.
    struct OneByOne: FleetFlowStore {
        let store: any FleetFlowStore
        func upsert(host: UUID, flows: [FlowRecord]) async throws { try await store.upsert(host: host, flows: flows) }
        func acknowledge(host: UUID, after: Int64, through: Int64) async throws -> Int64? { try await store.acknowledge(host: host, after: after, through: through) }
        func flows(host: UUID) async throws -> [FlowRecord] { try await store.flows(host: host) }
        func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] { try await store.rejected(hosts: hosts, since: since) }
    }

    static let now = TimeText.now()

    static func flow(_ local: String, _ remote: String, _ port: UInt16, direction: Direction = .outbound, transport: UInt8 = IPProtocolNumber.tcp,
                     verdict: FlowVerdict = .allowed, connections: UInt64, age: Int64 = 60, names: [String] = []) -> FlowRecord {
        let key = FlowKey(direction: direction, transport: transport, local: IPAddress(local)!, remote: IPPrefix(IPAddress(remote)!), service: port,
                          verdict: verdict)
        return FlowRecord(key: key, stats: FlowStats(connections: connections, packets: connections * 10, bytes: connections * 1000,
                                                     firstSeen: now - age - 3600, lastSeen: now - age), remoteNames: names)
    }

    /// web-1 enforces, web-2 waits for a policy that allows the database only, web-3, db-1 and a
    /// host with no tier discover. Both ends of web→db report it; db-1 refused web-2's ssh.
    static func fleet(_ db: StoreConcurrencyTests.Database) async throws -> [String: UUID] {
        let secret = try await db.stores.enrollment.createSecret(tags: [:], ttlSeconds: nil, uses: nil, hostTags: true, extraWhitelist: [])
        var ids: [String: UUID] = [:]
        for (name, address, tags) in [("web-1", "192.0.2.11", ["tier": "web", "env": "prod"]), ("web-2", "192.0.2.12", ["tier": "web"]),
                                      ("db-1", "192.0.2.20", ["tier": "db"]), ("lone", "2001:db8::30", [:]), ("web-3", "192.0.2.13", ["tier": "web"])] {
            let enrolled = try #require(try await db.stores.enrollment.enroll(
                EnrollRequest(secret: secret, hostname: name, machineID: "m-\(name)", addresses: [address], agentVersion: "test", tags: tags)))
            ids[name] = try #require(UUID(uuidString: enrolled.hostID))
        }
        let policy = EffectivePolicy(content: """
            name: web
            networks:
              - name: db
                entries: [192.0.2.20]
                services: [tcp/5432]
            outgoing:
              - to: db
            """, digest: "sha256:waiting", sources: [])
        let assigned = String(decoding: try Wire.encode(policy), as: UTF8.self)
        try await db.client.query("UPDATE hosts SET status = '{\"mode\": \"enforce\"}' WHERE id = \(ids["web-1"]!)", logger: db.logger)
        try await db.client.query("UPDATE hosts SET assigned_policy = \(assigned)::jsonb WHERE id = \(ids["web-2"]!)", logger: db.logger)
        try await db.stores.flows.upsert(host: ids["web-1"]!, flows: [
            flow("192.0.2.11", "192.0.2.20", 5432, connections: 40),
            // Beside the fleet's database, one outside it on the same port: one run of rows, two edges.
            flow("192.0.2.11", "198.51.100.5", 5432, connections: 8),
            flow("192.0.2.11", "192.0.2.53", 53, transport: IPProtocolNumber.udp, connections: 9),
            flow("192.0.2.11", "203.0.113.80", 443, connections: 7, names: ["API.example.com"]),
            flow("192.0.2.11", "198.51.100.7", 443, connections: 3),
            flow("192.0.2.11", "198.51.100.9", 443, connections: 3),
            flow("192.0.2.11", "198.51.100.10", 443, connections: 5),
            flow("192.0.2.11", "198.51.100.66", 23, direction: .inbound, verdict: .rejected, connections: 2),
            flow("192.0.2.11", "198.51.100.70", 8080, direction: .forward, connections: 100),
            flow("192.0.2.11", "198.51.100.71", 443, connections: 11, age: 10 * 86_400),
        ])
        try await db.stores.flows.upsert(host: ids["web-2"]!, flows: [
            flow("192.0.2.12", "198.51.100.8", 443, connections: 5),
            flow("192.0.2.12", "192.0.2.20", 5432, connections: 6),
            flow("192.0.2.12", "192.0.2.20", 22, verdict: .rejected, connections: 1),
        ])
        try await db.stores.flows.upsert(host: ids["db-1"]!, flows: [
            flow("192.0.2.20", "192.0.2.11", 5432, direction: .inbound, connections: 40),
            flow("192.0.2.20", "192.0.2.12", 5432, direction: .inbound, connections: 6),
            flow("192.0.2.20", "192.0.2.12", 22, direction: .inbound, verdict: .rejected, connections: 1),
        ])
        // In web-1's group, discovering: its rejected row lands on web-1's edge, its others apart.
        try await db.stores.flows.upsert(host: ids["web-3"]!, flows: [
            flow("192.0.2.13", "198.51.100.66", 23, direction: .inbound, verdict: .rejected, connections: 3),
            flow("192.0.2.13", "198.51.100.7", 443, connections: 2),
        ])
        try await db.stores.flows.upsert(host: ids["lone"]!, flows: [
            flow("2001:db8::30", "2001:db8::1", 80, connections: 4),
            flow("2001:db8::30", "192.0.2.11", 8443, connections: 2),
        ])
        return ids
    }

    struct View: CustomStringConvertible {
        var group: String?
        var expanded: Set<String> = []
        var only: Set<String>?
        var days: Int64 = 7
        var description: String { "group \(group ?? "none") expanded \(expanded.sorted()) only \(only?.sorted() ?? []) \(days) d" }
    }

    static let views = [View(group: "tier"), View(group: nil), View(group: "tier", expanded: ["group:tier=web"]),
                        View(group: "tier", only: ["db-1"]), View(group: "tier", only: ["web-1", "web-2"]), View(group: "tier", days: 30)]

    static func compare(_ db: StoreConcurrencyTests.Database, _ view: View) async throws -> [DependencyMap.Edge] {
        let fleet = DependencyMap.Host.fleet(try await db.stores.hosts.mapHosts())
        let selected = fleet.filter { view.only?.contains($0.hostname) ?? true }
        let classifier = DependencyMap.Classifier(fleet: fleet, external: .server, groupBy: view.group, expanded: view.expanded)
        let since = now - view.days * 86_400
        let summed = try await db.stores.flows.graph(of: selected, classifier: classifier, since: since).sorted()
        let placed = try await OneByOne(store: db.stores.flows).graph(of: selected, classifier: classifier, since: since).sorted()
        #expect(summed == placed, "\(view)")
        #expect(!summed.edges.isEmpty, "\(view)")
        func text(_ page: (items: [MapFlow], total: Int)) -> [String] { ["\(page.total)"] + page.items.map { "\($0.hostID) \($0.hostname) \($0.flow)" } }
        for edge in summed.edges {
            let whole = text(try await db.stores.flows.flows(on: edge.key, members: [:], of: selected, classifier: classifier, since: since,
                                                             offset: 0, limit: 500))
            #expect(whole == text(try await OneByOne(store: db.stores.flows).flows(on: edge.key, members: [:], of: selected, classifier: classifier,
                                                                                  since: since, offset: 0, limit: 500)), "\(view) \(edge.key.id)")
            #expect(whole.count - 1 == edge.flows, "an edge lists the flows it was drawn from: \(view) \(edge.key.id)")
            // Pages of one, one after the other, are the whole list; past the end, the total still.
            var paged = ["\(edge.flows)"]
            for offset in 0..<edge.flows {
                paged += text(try await db.stores.flows.flows(on: edge.key, members: [:], of: selected, classifier: classifier, since: since,
                                                                offset: offset, limit: 1)).dropFirst()
            }
            #expect(paged == whole, "\(view) \(edge.key.id)")
            let past = try await db.stores.flows.flows(on: edge.key, members: [:], of: selected, classifier: classifier, since: since,
                                                       offset: edge.flows + 3, limit: 5)
            #expect(past.items.isEmpty && past.total == edge.flows, "\(view) \(edge.key.id)")
        }
        return summed.edges
    }

    @Test("the map summed from the rows in memory is the map placed flow by flow: graphs, edge pages, folded nodes, rows from before the map's columns")
    func summedEqualsPlaced() async throws {
        guard StoreConcurrencyTests.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await StoreConcurrencyTests.Database()
        defer { db.close() }
        let ids = try await Self.fleet(db)
        let rows = try await db.stores.hosts.mapHosts()
        #expect(rows.first { $0.hostname == "web-1" }?.enforcing == true && rows.first { $0.hostname == "web-2" }?.enforcing == false)
        #expect(rows.first { $0.hostname == "web-1" }?.tags == ["tier": "web", "env": "prod"] && rows.first { $0.hostname == "web-1" }?.addresses == ["192.0.2.11"])
        #expect(rows.first { $0.hostname == "web-2" }?.waitingDigest == "sha256:waiting" && rows.first { $0.hostname == "web-1" }?.waitingPolicy == nil)

        // The map's hosts are kept between reads and read again where what the map shows changed,
        // whoever changed it: tags, addresses, a name, the mode, the policy assigned.
        try await db.client.query("""
            UPDATE hosts SET tags = '{"tier": "db"}', addresses = '["2001:db8::31"]' WHERE hostname = 'lone'
            """, logger: db.logger)
        let changed = try #require(try await db.stores.hosts.mapHosts().first { $0.hostname == "lone" })
        #expect(changed.tags == ["tier": "db"] && changed.addresses == ["2001:db8::31"])
        try await db.client.query("UPDATE hosts SET tags = '{}', addresses = '[\"2001:db8::30\"]' WHERE hostname = 'lone'", logger: db.logger)
        #expect(try await db.stores.hosts.mapHosts().first { $0.hostname == "lone" }.map { $0.tags.isEmpty && $0.addresses == ["2001:db8::30"] } == true)
        try await db.client.query("UPDATE hosts SET hostname = 'lone-2', status = '{\"mode\": \"enforce\"}' WHERE hostname = 'lone'", logger: db.logger)
        let renamed = try await db.stores.hosts.mapHosts()
        #expect(renamed.map(\.hostname) == ["db-1", "lone-2", "web-1", "web-2", "web-3"] && renamed.first { $0.hostname == "lone-2" }?.enforcing == true)
        try await db.client.query("""
            UPDATE hosts SET assigned_policy = (SELECT assigned_policy FROM hosts WHERE hostname = 'web-2') WHERE hostname = 'lone-2'
            """, logger: db.logger)
        #expect(try await db.stores.hosts.mapHosts().first { $0.hostname == "lone-2" }?.waitingDigest == "sha256:waiting")
        try await db.client.query("""
            UPDATE hosts SET status = '{"mode": "enforce", "ruleset_digest": "sha256:waiting"}' WHERE hostname = 'lone-2'
            """, logger: db.logger)
        #expect(try await db.stores.hosts.mapHosts().first { $0.hostname == "lone-2" }.map { $0.waitingDigest == nil && $0.enforcing } == true,
                "the assigned policy in force: nothing waits")
        try await db.client.query("UPDATE hosts SET hostname = 'lone', status = '{}', assigned_policy = NULL WHERE hostname = 'lone-2'", logger: db.logger)
        #expect(try await db.stores.hosts.mapHosts().first { $0.hostname == "lone" }.map { !$0.enforcing && $0.waitingDigest == nil } == true)
        // An agent's contact rewrites the row but not what the map shows: the stamp stays.
        func stamp() async throws -> String? {
            try await db.client.query("SELECT map_changed_txid::text FROM hosts WHERE hostname = 'lone'", logger: db.logger).collect().first?.decode(String.self)
        }
        let stamped = try await stamp()
        #expect(stamped != nil && stamped != "0")
        try await db.client.query("UPDATE hosts SET last_seen = now(), status = '{\"lost_events\": 3}' WHERE hostname = 'lone'", logger: db.logger)
        #expect(try await stamp() == stamped)
        // Stamps from another cluster (a restore), above this one's transactions, are stamped
        // again at start: else every refresh would read them.
        try await db.client.query("""
            UPDATE hosts SET map_changed_txid = (pg_current_xact_id()::text::numeric + 1000000)::text::xid8 WHERE hostname = 'lone'
            """, logger: db.logger)
        #expect(try await Migrations.restamp(db.client, logger: db.logger) == 1)
        let below = try await db.client.query("SELECT map_changed_txid <= pg_current_xact_id() FROM hosts WHERE hostname = 'lone'", logger: db.logger)
            .collect().first?.decode(Bool.self)
        #expect(below == true)
        #expect(try await Migrations.restamp(db.client, logger: db.logger) == 0)

        var byView: [String: [DependencyMap.Edge]] = [:]
        for view in Self.views { byView[view.description] = try await Self.compare(db, view) }
        // What the sums must show, beyond agreeing: one east-west edge per connection, counted from
        // the client; amber from the waiting policy; red kept; the forwarded and the old left out.
        let tiers = try #require(byView[Self.views[0].description]).map(\.key.id)
        #expect(tiers.contains("group:tier=web|group:tier=db|tcp/5432|allowed"))
        #expect(tiers.contains("group:tier=web|group:tier=db|tcp/5432|discovered"), "web-2's database traffic: its policy allows it")
        #expect(tiers.contains("group:tier=web|group:tier=db|tcp/22|rejected"))
        #expect(tiers.contains("group:tier=web|somewhere:outbound tcp/443|tcp/443|pending"))
        #expect(tiers.contains("group:tier=web|name:api.example.com|tcp/443|allowed"))
        #expect(tiers.contains("somewhere:inbound tcp/23|group:tier=web|tcp/23|rejected"))
        #expect(tiers.contains("group:tier=|group:tier=web|tcp/8443|discovered"))
        #expect(tiers.contains("group:tier=web|somewhere:outbound tcp/5432|tcp/5432|allowed"), "the run's row outside the fleet")
        #expect(tiers.contains("group:tier=web|somewhere:outbound tcp/443|tcp/443|discovered"), "web-3's, apart from web-1's")
        let week = try #require(byView[Self.views[0].description])
        #expect(week.first { $0.key.id == "somewhere:inbound tcp/23|group:tier=web|tcp/23|rejected" }.map { ($0.connections, $0.flows) } ?? (0, 0) == (5, 2),
                "rejected is rejected, enforcing or not: web-1's and web-3's on one edge")
        #expect(!tiers.contains { $0.contains("8080") } && !tiers.contains { $0.hasPrefix("group:tier=db|") })
        #expect(byView[Self.views[3].description]?.contains { $0.key.id == "group:tier=web|group:tier=db|tcp/5432|discovered" } == true,
                "db-1 alone: its own report of the connections draws them")
        let month = try #require(byView[Self.views[5].description])
        #expect(month.first { $0.key.id == "group:tier=web|somewhere:outbound tcp/443|tcp/443|allowed" }?.flows
                == (week.first { $0.key.id == "group:tier=web|somewhere:outbound tcp/443|tcp/443|allowed" }?.flows ?? 0) + 1)

        // An edge to a folded node lists the flows of every node folded into it.
        let fleet = DependencyMap.Host.fleet(rows)
        let classifier = DependencyMap.Classifier(fleet: fleet, external: .server, groupBy: "tier")
        let members = ["other:networks": ["name:api.example.com", "somewhere:outbound tcp/443"]]
        let folded = DependencyMap.EdgeKey(from: "group:tier=web", to: "other:networks", service: "tcp/443", state: .allowed)
        let summed = try await db.stores.flows.flows(on: folded, members: members, of: fleet, classifier: classifier, since: Self.now - 7 * 86_400,
                                                     offset: 0, limit: 50)
        let placed = try await OneByOne(store: db.stores.flows).flows(on: folded, members: members, of: fleet, classifier: classifier,
                                                                      since: Self.now - 7 * 86_400, offset: 0, limit: 50)
        #expect(summed.total == 4 && placed.total == 4 && summed.items.map(\.flow) == placed.items.map(\.flow), "\(summed.items.map(\.flow.remoteAddress))")

        // An upload after the map was read is on the next map: the rows kept in memory take
        // what was written since they were read.
        let weekAgo = Self.now - 7 * 86_400
        let before = try await db.stores.flows.graph(of: fleet, classifier: classifier, since: weekAgo).sorted()
        try await db.stores.flows.upsert(host: ids["web-1"]!, flows: [
            Self.flow("192.0.2.11", "192.0.2.20", 5432, connections: 45),
            Self.flow("192.0.2.11", "198.51.100.99", 25, verdict: .rejected, connections: 1),
        ])
        let after = try await db.stores.flows.graph(of: fleet, classifier: classifier, since: weekAgo).sorted()
        #expect(after == (try await OneByOne(store: db.stores.flows).graph(of: fleet, classifier: classifier, since: weekAgo).sorted()))
        #expect(after.edges.first { $0.key.id == "group:tier=web|group:tier=db|tcp/5432|allowed" }?.connections == 45)
        #expect(after.edges.contains { $0.key.id == "group:tier=web|somewhere:outbound tcp/25|tcp/25|rejected" })
        #expect(!before.edges.contains { $0.key.id == "group:tier=web|somewhere:outbound tcp/25|tcp/25|rejected" })
        let fresh = PostgresFleetFlowStore(client: db.client, logger: db.logger)
        #expect(try await fresh.refreshMap() == 21, "a replica's first read takes every row")
        #expect(try await fresh.graph(of: fleet, classifier: classifier, since: weekAgo).sorted() == after)

        // Rows stored before migration 009 have no map columns. Changed by hand, they leave the map
        // of a running replica too (every write is stamped, whoever made it); a server starting
        // classifies them, and the map is as it was.
        try await db.client.query("UPDATE host_flows SET direction = NULL, verdict = NULL, service = NULL, peer_address = NULL, peer_node = NULL",
                                  logger: db.logger)
        let unclassified = try await db.stores.flows.graph(of: fleet, classifier: classifier, since: weekAgo).sorted()
        #expect(unclassified.flows == 3 && after.flows > 10, "only web-2's three flows, placed one by one (its policy waits), are left: \(unclassified.flows)")
        let classified = try await PostgresFleetFlowStore(client: db.client, logger: db.logger).classifyUnclassified()
        #expect(classified == 21)
        #expect(try await db.stores.flows.graph(of: fleet, classifier: classifier, since: weekAgo).sorted() == after)
    }
}
