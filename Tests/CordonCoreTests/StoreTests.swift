import CordonCore
@testable import CordonStore
import Foundation
import GRDB
import Testing

@Suite struct StoreTests {
    func temporaryPath() -> String {
        NSTemporaryDirectory() + "cordon-store-test-\(UUID().uuidString).db"
    }

    /// A committed fixture, copied first: opening it migrates it, and the fixture must stay as
    /// its release wrote it.
    func withCopy(of fixture: String, _ body: (FlowStore, String) throws -> Void) throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        try FileManager.default.copyItem(atPath: fixture, toPath: path)
        try body(try FlowStore(path: path), path)
    }

    func key(_ direction: Direction, _ transport: UInt8, _ remote: String, _ service: UInt16) -> FlowKey {
        FlowKey(direction: direction, transport: transport, local: IPAddress("192.0.2.10")!, remote: IPPrefix(remote)!, service: service)
    }

    @Test("a file that is no database, an empty file and a schema from a newer cordon are refused, naming the file")
    func unusableDatabasesAreRefusedByName() throws {
        let garbage = temporaryPath(), empty = temporaryPath(), newer = temporaryPath()
        defer { for path in [garbage, empty, newer] { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } } }
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: garbage))
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        do {
            let pool = try DatabasePool(path: newer)
            try FlowStore.migrator.migrate(pool)
            try pool.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        }
        for path in [garbage, empty, newer] {
            for open in [{ _ = try FlowStore(path: path) }, { _ = try FlowStore(existing: path) }, { _ = try FlowStore(readingFrom: path) }] {
                let error = try #require(throws: StoreError.self) { try open() }
                #expect(error.description.contains(path), "\(error)")
            }
        }
        let empties = try #require(throws: StoreError.self) { try FlowStore(path: empty) }
        #expect(empties.description.contains("empty file"))
        let future = try #require(throws: StoreError.self) { try FlowStore(existing: newer) }
        #expect(future.description.contains("newer cordon"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: empty)).isEmpty, "refusing changes nothing")
    }

    /// `Tests/Fixtures/cordon-RELEASE.db`, written by that release itself.
    static func fixture(_ release: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/cordon-\(release).db").path
    }

    /// 0.1.0's: approve, isolate and release directly, isolate again.
    @Test("a database of release 0.1.0 migrates: its log still verifies, new entries chain on with sequence numbers and the whitelist as data")
    func previousReleaseMigratesAndItsLogVerifies() throws {
        try withCopy(of: Self.fixture("0.1.0")) { store, path in
            #expect(try store.verifyDecisions().isEmpty)
            let state = try store.hostState()
            #expect(state.isolation.isolated && state.isolation.reason == "left isolated" && state.isolation.releasing == nil)
            #expect(state.enforcement == EnforcementState())
            try store.record(action: "release", operator: "ivy", reason: "after the upgrade", policy: "x",
                             whitelist: [.init(protocol: "tcp", address: "192.0.2.20", port: 9000)], outcome: "success")
            let log = try store.decisions()
            #expect(log.map(\.format) == [1, 1, 1, 1, 2])
            #expect(log.map(\.sequence) == [1, 2, 3, 4, 5])
            #expect(log[1].whitelist == "resolver 192.0.2.53", "the old entries keep their sentence")
            #expect(log[4].managementWhitelist == [.init(protocol: "tcp", address: "192.0.2.20", port: 9000)])
            #expect(log[4].previousHash == log[3].hash)
            #expect(try store.verifyDecisions().isEmpty)
            let queue = try DatabaseQueue(path: path)
            try queue.write { db in
                try db.execute(sql: "DROP TRIGGER decisions_append_only_update")
                try db.execute(sql: "UPDATE decisions SET whitelist = 'none' WHERE seq = 2")
            }
            #expect(try store.verifyDecisions().contains { $0.contains("entry 2 (isolate by ivy") && $0.contains("was altered") })
        }
    }

    /// 0.2.0's, for the releases after it: approve, enforce, confirm, isolate, release, stop.
    @Test("a database of release 0.2.0 opens: enforcing version 1, confirmed, released; its log verifies and new entries chain on")
    func release020DatabaseOpensAndItsLogVerifies() throws {
        try withCopy(of: Self.fixture("0.2.0")) { store, _ in
            #expect(try store.verifyDecisions().isEmpty)
            let state = try store.hostState()
            #expect(state.enforcement.mode == .enforce && state.enforcement.version == 1 && !state.enforcement.unconfirmed)
            #expect(!state.isolation.isolated)
            #expect(try store.latestRuleset()?.version == 1)
            try store.record(action: "discover", operator: "ivy", reason: "after the upgrade", policy: "x",
                             whitelist: [.init(protocol: "tcp", address: "192.0.2.20", port: 9000)], outcome: "success")
            let log = try store.decisions()
            #expect(log.map(\.action) == ["approve", "enforce", "confirm", "isolate", "release", "discover"])
            #expect(log.map(\.sequence) == [1, 2, 3, 4, 5, 6])
            #expect(log[5].previousHash == log[4].hash)
            #expect(try store.verifyDecisions().isEmpty)
        }
    }

    @Test func aDatabaseFromBeforeVerdictsKeepsItsFlowsAsAllowed() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        do {
            // The schema as the previous release left it, with one flow.
            let pool = try DatabasePool(path: path)
            try FlowStore.migrator.migrate(pool, upTo: "v2-rulesets-and-decisions")
            try pool.write { db in
                try db.execute(sql: """
                    INSERT INTO flows (direction, family, protocol, local_address, service, remote_address, remote_prefix,
                                       connections, first_seen, last_seen)
                    VALUES ('inbound', 'ipv4', 6, '192.0.2.10', 22, '198.51.100.1', 32, 5, 10, 20)
                    """)
            }
        }
        let store = try FlowStore(path: path)
        let all = try store.loadAll()
        #expect(all.map(\.key) == [key(.inbound, 6, "198.51.100.1", 22)])
        #expect(all.first?.key.verdict == .allowed)
        #expect(all.first?.stats.connections == 5)
        // The same flow refused later is a record of its own.
        var aggregator = FlowAggregator()
        var rejected = key(.inbound, 6, "198.51.100.1", 22)
        rejected.verdict = .rejected
        aggregator.record(rejected, at: 30)
        try store.write(aggregator.takeChanges())
        #expect(try store.loadAll().count == 2)
        #expect(try store.flows(matching: FlowFilter(verdict: .rejected)).map(\.key) == [rejected])
    }

    @Test func flushesAreUpsertsAndSurviveReopening() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        var aggregator = FlowAggregator()
        aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 10)
        aggregator.record(key(.outbound, 17, "198.51.100.53", 53), at: 20)
        do {
            let store = try FlowStore(path: path)
            try store.write(aggregator.takeChanges())
            aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 30)
            let second = aggregator.takeChanges()
            try store.write(second)
            try store.write(second)  // a repeated flush changes nothing
        }
        let reader = try FlowStore(readingFrom: path)
        let all = try reader.loadAll()
        #expect(all.count == 2)
        let ssh = try #require(all.first { $0.key.service == 22 })
        #expect(ssh.stats == FlowStats(connections: 2, firstSeen: 10, lastSeen: 30))
    }

    @Test func filtersByDirectionProtocolPortAndTime() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        var aggregator = FlowAggregator()
        aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 1_000)
        aggregator.record(key(.outbound, 6, "198.51.100.2", 22), at: 2_000)
        aggregator.record(key(.outbound, 17, "198.51.100.53", 53), at: 3_000)
        aggregator.record(key(.outbound, 1, "198.51.100.9", 8 << 8 | 22), at: 3_000)  // ICMP: service is not a port
        try store.write(aggregator.takeChanges())
        #expect(try store.flows(matching: FlowFilter(direction: .inbound)).count == 1)
        #expect(try store.flows(matching: FlowFilter(transport: 6)).count == 2)
        #expect(try store.flows(matching: FlowFilter(port: 22)).count == 2)
        #expect(try store.flows(matching: FlowFilter(port: 22 | 8 << 8)).isEmpty)
        #expect(try store.flows(matching: FlowFilter(seenSince: 2_500)).count == 2)
        #expect(try store.flows(matching: FlowFilter(direction: .outbound, transport: 6, port: 22)).count == 1)
    }

    @Test func rolledUpRowsAreReplacedNotDuplicated() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        var aggregator = FlowAggregator(remoteCap: 2)
        var state: UInt32 = 7
        for round in 0..<20 {
            for _ in 0..<50 {
                state = state &* 1_664_525 &+ 1_013_904_223
                aggregator.record(FlowKey(direction: .inbound, transport: 6, local: IPAddress("192.0.2.10")!,
                                          remote: IPPrefix(IPAddress(ipv4: state)), service: 22), at: Int64(round))
            }
            try store.write(aggregator.takeChanges())
        }
        let stored = try store.loadAll()
        #expect(stored.count == aggregator.count)
        #expect(stored.reduce(0) { $0 + $1.stats.connections } == 1_000)
    }

    @Test func readerRefusesAMissingDatabase() {
        #expect(throws: StoreError.self) { try FlowStore(readingFrom: "/nonexistent/cordon.db") }
    }

    @Test func persistsAgentState() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        #expect(try store.state("mode") == nil)
        try store.setState("mode", "discovery")
        try store.setState("mode", "discovery")
        #expect(try store.state("mode") == "discovery")
    }
}

@Suite struct DecisionStoreTests {
    func withStore(_ body: (FlowStore, String) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "cordon-decisions-\(UUID().uuidString).db"
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        try body(try FlowStore(path: path), path)
    }

    @Test func approvalsAreVersionsWithDigestAndChainedLogEntries() throws {
        try withStore { store, _ in
            let first = try store.approve(content: "networks: []\n", source: "a.yaml", operator: "alice", acceptedRisks: [], reason: "initial",
                                          at: 100)
            try store.record(action: "approve", operator: "bob", reason: "", policy: "x", outcome: "refused: lockout risk (ssh)", at: 150)
            let second = try store.approve(content: "networks: [x]\n", source: "b.yaml", operator: "bob", acceptedRisks: ["dns"], reason: "",
                                           at: 200)
            #expect(first.version == 1 && second.version == 2)
            #expect(first.digest == ContentDigest.hex("networks: []\n"))
            #expect(try store.latestRuleset() == second)
            #expect(try store.rulesetVersions().map(\.acceptedRisks) == [[], ["dns"]])
            let log = try store.decisions()
            #expect(log.map(\.outcome) == ["success", "refused: lockout risk (ssh)", "success (risks accepted: dns)"])
            #expect(log[0].previousHash == "")
            #expect(log[1].previousHash == log[0].hash)
            #expect(log[2].previousHash == log[1].hash)
            #expect(Set(log.map(\.id)).count == 3)
            #expect(log.map(\.sequence) == [1, 2, 3] && log.allSatisfy { $0.format == 2 })
        }
    }

    @Test func historyCannotBeRewritten() throws {
        try withStore { store, path in
            try store.approve(content: "networks: []\n", source: "a.yaml", operator: "alice", acceptedRisks: [], reason: "")
            let queue = try DatabaseQueue(path: path)
            #expect(throws: (any Error).self) { try queue.write { try $0.execute(sql: "UPDATE decisions SET operator = 'mallory'") } }
            #expect(throws: (any Error).self) { try queue.write { try $0.execute(sql: "DELETE FROM decisions") } }
            #expect(throws: (any Error).self) { try queue.write { try $0.execute(sql: "UPDATE rulesets SET content = ''") } }
            #expect(try store.decisions().first?.operator == "alice")
        }
    }

    /// Someone with write access drops the triggers and edits the file: `verifyDecisions` names it.
    @Test(arguments: [
        ("UPDATE decisions SET outcome = 'success' WHERE seq = 2", "entry 2 (enforce by bob", "was altered"),
        ("UPDATE decisions SET policy = 'allow everything' WHERE seq = 2", "entry 2 (enforce by bob", "does not match its digest"),
        ("DELETE FROM decisions WHERE seq = 2", "entries 2-2 are missing", "before entry 3"),
        ("DELETE FROM decisions WHERE seq = 3", "entries 3-3 were removed", "from the end of the log"),
        (#"UPDATE decisions SET management_whitelist = '[]' WHERE seq = 2"#, "entry 2 (enforce by bob", "was altered"),
    ])
    func tamperingIsEvident(_ sql: String, _ first: String, _ second: String) throws {
        try withStore { store, path in
            try store.approve(content: "networks: []\n", source: "a.yaml", operator: "alice", acceptedRisks: [], reason: "")
            try store.record(action: "enforce", operator: "bob", reason: "", policy: "networks: []\n",
                             whitelist: [.init(protocol: "tcp", address: "192.0.2.20", port: 9000)], outcome: "failed: x")
            try store.record(action: "rollback", operator: "cordon-agent", reason: "", policy: "discovery", outcome: "success")
            #expect(try store.verifyDecisions().isEmpty)
            let queue = try DatabaseQueue(path: path)
            try queue.write { db in
                try db.execute(sql: "DROP TRIGGER decisions_append_only_update; DROP TRIGGER decisions_append_only_delete")
                try db.execute(sql: sql)
            }
            let problems = try store.verifyDecisions()
            #expect(problems.contains { $0.contains(first) && $0.contains(second) }, "\(problems)")
        }
    }
}
