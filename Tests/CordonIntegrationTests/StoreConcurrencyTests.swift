import CordonLab
import CordonServer
import CordonWire
import Foundation
import Logging
import PostgresNIO
import Testing

/// The server's stores against a real PostgreSQL, with the interleavings of concurrent analysts
/// forced rather than hoped for: a transaction of the test's holds a host's row lock while the
/// requests under test queue behind it, and is let go only once they all wait.
@Suite(.serialized) struct StoreConcurrencyTests {
    static var shouldRun: Bool { Integration.shouldRun && (Integration.required || PostgresCluster.binaries() != nil) }

    /// A throwaway cluster on this machine's loopback, a migrated schema, and the stores.
    final class Database: @unchecked Sendable {
        let lab: Lab
        let cluster: PostgresCluster
        let client: PostgresClient
        let stores: Stores
        let logger = Logger(label: "store-test")
        /// The first query races the pool's start, which PostgresNIO warns of.
        static var quiet: Logger {
            var logger = Logger(label: "store-test-pool")
            logger.logLevel = .error
            return logger
        }
        private let running: Task<Void, Never>

        init() async throws {
            lab = try Lab()
            do {
                cluster = try PostgresCluster(lab: lab, namespace: nil, port: Int.random(in: 20_000...29_999))
            } catch {
                lab.cleanup()
                throw error
            }
            client = PostgresClient(configuration: .init(host: "127.0.0.1", port: cluster.port, username: "postgres", password: nil,
                                                         database: "postgres", tls: .disable), backgroundLogger: Self.quiet)
            let client = client
            running = Task { await client.run() }
            try await Migrations.migrate(client, logger: logger)
            stores = Stores(client: client, logger: logger)
        }

        func close() {
            running.cancel()
            lab.cleanup()
        }

        /// A host enrolled through the store, as an agent would be.
        func host(_ name: String) async throws -> UUID {
            let secret = try await stores.enrollment.createSecret(tags: [:], ttlSeconds: nil, uses: nil, hostTags: true, extraWhitelist: [])
            let enrolled = try #require(try await stores.enrollment.enroll(
                EnrollRequest(secret: secret, hostname: name, machineID: "m-\(name)", addresses: [], agentVersion: "test", tags: [:])))
            return try #require(UUID(uuidString: enrolled.hostID))
        }

        func token(_ name: String) async throws -> UUID {
            try await stores.tokens.create(name: name, role: .responder).id
        }

        /// Sessions waiting for a lock, other than the test's own.
        func lockWaiters() async throws -> Int {
            for try await count in try await client.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", logger: logger)
                .decode(Int64.self) { return Int(count) }
            return 0
        }

        func waitForLockWaiters(_ count: Int) async throws {
            let deadline = Date().addingTimeInterval(20)
            while try await lockWaiters() < count {
                guard Date() < deadline else { throw LabError("fewer than \(count) sessions ever waited for the lock") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        /// Holds the rows of `hosts` locked until `release` is finished; returns once they are held.
        func holdLocks(on hosts: [UUID]) async throws -> (done: Task<Void, any Error>, release: AsyncStream<Void>.Continuation) {
            let (released, release) = AsyncStream<Void>.makeStream()
            let (held, heldSignal) = AsyncStream<Void>.makeStream()
            let client = client, logger = logger
            let done = Task {
                try await client.withTransaction(logger: logger) { connection in
                    try await connection.query("SELECT 1 FROM hosts WHERE id = ANY(\(hosts)::uuid[]) FOR UPDATE", logger: logger)
                    heldSignal.finish()
                    for await _ in released {}
                }
            }
            for await _ in held {}
            return (done, release)
        }

        func desired(_ host: UUID) async throws -> DesiredState {
            try #require(try await stores.desired.desired(host: host))
        }
    }

    static func report(local: LocalIsolationChange?, observed: IsolationWord) -> AgentReport {
        AgentReport(status: AgentStatus(mode: "discovery", isolated: observed == .isolated, rulesetVersion: nil, rulesetDigest: nil, lostEvents: 0,
                                        guardRestores: 0, guardEscalations: 0, flows: 0, agentVersion: "test", addresses: []),
                    observed: observed, appliedGeneration: 0, applied: nil, local: local, log: [], flows: [])
    }

    @Test("a cancel that queued behind another analyst's newer isolation is refused (409) and leaves that isolation in force")
    func cancelAfterNewerIntent() async throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await Database()
        defer { db.close() }
        let isolation = db.stores.desired
        let host = try await db.host("h")
        let (one, two) = (try await db.token("responder-1"), try await db.token("responder-2"))
        // X: pending, the agent is offline.
        let x = try await isolation.request(host: host, IsolationRequest(state: .isolated, reason: "x"), by: "responder-1", tokenID: one, idempotencyKey: nil)
        #expect(x.status == .pending)
        let xID = try #require(UUID(uuidString: x.intentID))

        // Y is first in the host's queue, the cancel of X second.
        let lock = try await db.holdLocks(on: [host])
        let y = Task { try await isolation.request(host: host, IsolationRequest(state: .isolated, reason: "y"), by: "responder-2", tokenID: two, idempotencyKey: nil) }
        try await db.waitForLockWaiters(1)
        let cancel = Task { try await isolation.cancel(intent: xID, by: "responder-1") }
        try await db.waitForLockWaiters(2)
        lock.release.finish()
        try await lock.done.value

        let accepted = try await y.value
        #expect(accepted.status == .pending && accepted.generation == x.generation + 1)
        await #expect(throws: IsolationRefusal.notPending(.superseded)) { try await cancel.value }
        let desired = try await db.desired(host)
        #expect(desired.isolation.state == .isolated, "the cancel undid the newer isolation")
        #expect(desired.isolation.intentID == accepted.intentID && desired.generation == accepted.generation)
        let yID = try #require(UUID(uuidString: accepted.intentID))
        let yView = try #require(try await isolation.intent(yID))
        #expect(yView.status == .pending, "\(yView)")
        #expect(try await isolation.intent(xID)?.status == .superseded)
    }

    @Test("a cancel of the pending intent still works: the state before it comes back at the next generation")
    func cancelPending() async throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await Database()
        defer { db.close() }
        let isolation = db.stores.desired
        let host = try await db.host("h")
        let token = try await db.token("r")
        let x = try await isolation.request(host: host, IsolationRequest(state: .isolated, reason: "x"), by: "r", tokenID: token, idempotencyKey: nil)
        let canceled = try await isolation.cancel(intent: try #require(UUID(uuidString: x.intentID)), by: "r")
        #expect(canceled.status == .superseded && canceled.error == "canceled by r")
        let desired = try await db.desired(host)
        #expect(desired.isolation.state == .released && desired.generation == x.generation + 1 && desired.isolation.intentID == nil)
        await #expect(throws: IsolationRefusal.notPending(.superseded)) { try await isolation.cancel(intent: UUID(uuidString: x.intentID)!, by: "r") }
        await #expect(throws: IsolationRefusal.noIntent) { try await isolation.cancel(intent: UUID(), by: "r") }
    }

    @Test("one Idempotency-Key sent for two hosts at once: one intent, and the other request refused as a reused key, never a database error")
    func sameKeyTwoHosts() async throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await Database()
        defer { db.close() }
        let isolation = db.stores.desired
        let token = try await db.token("r")
        for round in 0..<5 {
            let (h1, h2) = (try await db.host("a\(round)"), try await db.host("b\(round)"))
            let key = "incident-\(round)"
            // Both requests are let go together.
            let lock = try await db.holdLocks(on: [h1, h2])
            let first = Task { try await isolation.request(host: h1, IsolationRequest(state: .isolated, reason: "r"), by: "r", tokenID: token, idempotencyKey: key) }
            let second = Task { try await isolation.request(host: h2, IsolationRequest(state: .isolated, reason: "r"), by: "r", tokenID: token, idempotencyKey: key) }
            try await db.waitForLockWaiters(2)
            lock.release.finish()
            try await lock.done.value
            var accepted = 0, reused = 0
            for task in [first, second] {
                do {
                    _ = try await task.value
                    accepted += 1
                } catch IsolationRefusal.keyReused {
                    reused += 1
                }
            }
            #expect(accepted == 1 && reused == 1, "round \(round): \(accepted) accepted, \(reused) refused")
        }
    }

    @Test("an Idempotency-Key replay returns the same intent; the same key with another reason, state or host is refused")
    func keyReplayAndMismatch() async throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await Database()
        defer { db.close() }
        let isolation = db.stores.desired
        let (host, other) = (try await db.host("h"), try await db.host("o"))
        let token = try await db.token("r")
        let request = IsolationRequest(state: .isolated, reason: "ticket 7", externalID: "INC-7")
        let first = try await isolation.request(host: host, request, by: "r", tokenID: token, idempotencyKey: "k")
        let again = try await isolation.request(host: host, request, by: "r", tokenID: token, idempotencyKey: "k")
        #expect(again == first)
        #expect(try await db.desired(host).generation == first.generation, "a replay makes no new generation")
        for changed in [IsolationRequest(state: .isolated, reason: "ticket 8", externalID: "INC-7"),
                        IsolationRequest(state: .isolated, reason: "ticket 7", externalID: "INC-8"),
                        IsolationRequest(state: .released, reason: "ticket 7", externalID: "INC-7")] {
            await #expect(throws: IsolationRefusal.keyReused) { try await isolation.request(host: host, changed, by: "r", tokenID: token, idempotencyKey: "k") }
        }
        await #expect(throws: IsolationRefusal.keyReused) { try await isolation.request(host: other, request, by: "r", tokenID: token, idempotencyKey: "k") }
        // Keys are the token's own: another token may use the same text.
        let second = try await db.token("s")
        let theirs = try await isolation.request(host: other, request, by: "s", tokenID: second, idempotencyKey: "k")
        #expect(theirs.intentID != first.intentID)
    }

    @Test("a report carrying a local isolation, sent three times, is one intent at one generation; the next local change is another")
    func localChangeReportedTwice() async throws {
        guard Self.shouldRun else { Issue.record(Integration.skipNote); return }
        let db = try await Database()
        defer { db.close() }
        let isolation = db.stores.desired
        let host = try await db.host("h")
        let isolate = LocalIsolationChange(state: .isolated, operator: "root", reason: "on the console", at: 1_800_000_000, sequence: 12)
        var generations: [Int64] = []
        for _ in 0..<3 {
            generations.append(try await isolation.observe(host: host, report: Self.report(local: isolate, observed: .isolated)).generation)
        }
        // The same entry under another operator's name is still that entry.
        var renamed = isolate
        renamed.operator = "someone else"
        generations.append(try await isolation.observe(host: host, report: Self.report(local: renamed, observed: .isolated)).generation)
        #expect(generations == [1, 1, 1, 1])
        let intents = try await isolation.intents(host: host, status: nil, limit: 100)
        #expect(intents.count == 1 && intents.first?.status == .succeeded && intents.first?.requestedBy == "root" && intents.first?.origin == .local, "\(intents)")

        // An analyst releases it; the old report arriving late changes nothing.
        let token = try await db.token("r")
        let release = try await isolation.request(host: host, IsolationRequest(state: .released, reason: "done"), by: "r", tokenID: token, idempotencyKey: nil)
        let late = try await isolation.observe(host: host, report: Self.report(local: isolate, observed: .isolated))
        #expect(late.isolation.state == .released && late.generation == release.generation, "a repeated report re-isolated the host")

        // A new local change (a later entry) is one more intent.
        let again = LocalIsolationChange(state: .isolated, operator: "root", reason: "again", at: 1_800_000_100, sequence: 15)
        let after = try await isolation.observe(host: host, report: Self.report(local: again, observed: .isolated))
        #expect(after.isolation.state == .isolated && after.generation == release.generation + 1)
        #expect(try await isolation.intents(host: host, status: nil, limit: 100).count == 3)

        // An agent older than the sequence: known by its time and operator.
        let old = LocalIsolationChange(state: .released, operator: "root", reason: "old agent", at: 1_800_000_200)
        let first = try await isolation.observe(host: host, report: Self.report(local: old, observed: .released))
        let second = try await isolation.observe(host: host, report: Self.report(local: old, observed: .released))
        #expect(first.generation == second.generation && first.isolation.state == .released)
    }
}
