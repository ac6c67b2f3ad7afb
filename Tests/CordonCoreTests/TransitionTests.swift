import CordonAgent
import CordonCore
@testable import CordonStore
import Foundation
import GRDB
import Logging
import Synchronization
import Testing

/// A kernel in memory: the tables it holds, every batch it was sent, and failures to inject.
final class FakeBackend: FirewallBackend {
    enum Failure { case refuse, unknown }
    struct FakeError: FirewallBackendError, CustomStringConvertible {
        var changedNothing: Bool
        var description: String { changedNothing ? "refused by the fake kernel" : "the fake kernel's answer was lost" }
    }
    struct State {
        var tables: [String: FirewallTable] = [:]
        var batches: [[TableChange]] = []
        var failures: [Failure] = []
        var handles: UInt64 = 0
    }
    let name = "fake"
    let state = Mutex(State())

    var tables: [String: FirewallTable] { state.withLock { $0.tables } }
    var batches: [[TableChange]] { state.withLock { $0.batches } }
    func failNext(_ failures: Failure...) { state.withLock { $0.failures += failures } }

    func apply(_ changes: [TableChange]) throws {
        try state.withLock { s in
            if !s.failures.isEmpty {
                let failure = s.failures.removeFirst()
                // An unknown outcome: the change may be in; here it is, the harder case.
                if failure == .unknown { Self.apply(changes, to: &s) }
                throw FakeError(changedNothing: failure == .refuse)
            }
            Self.apply(changes, to: &s)
        }
    }

    private static func apply(_ changes: [TableChange], to s: inout State) {
        s.batches.append(changes)
        for change in changes {
            switch change {
            case .replace(let table): s.tables[table.name] = table
            case .remove(let name): s.tables[name] = nil
            }
        }
    }

    func replace(_ table: FirewallTable) throws { try apply([.replace(table)]) }
    func remove(table name: String) throws { try apply([.remove(name)]) }
    func handle(of table: String) throws -> UInt64? { state.withLock { $0.tables[table] == nil ? nil : 1 } }
}

/// The clock and the collectors as a test sets them.
final class World: Sendable {
    let time = Mutex<Double>(1_000_000)
    let failing = Mutex<[String]>([])
    /// Runs inside the probe, outside every lock of the runner: what arrives meanwhile.
    let duringProbe = Mutex<(@Sendable () -> Void)?>(nil)
    let probes = Mutex(0)

    func advance(_ seconds: Double) { time.withLock { $0 += seconds } }

    var environment: TransitionRunner.Environment {
        TransitionRunner.Environment(
            management: { ManagementChannel(collectors: [try! ManagementChannel.collector("192.0.2.20:9000")], resolvers: [], extra: []) },
            probe: { [self] _, _ in
                probes.withLock { $0 += 1 }
                if let body = duringProbe.withLock({ $0 }) { body() }
                return failing.withLock { $0 }
            },
            now: { [self] in time.withLock { $0 } },
            sleep: { [self] in advance($0) },
            releaseCheckSeconds: 10)
    }
}

@Suite(.timeLimit(.minutes(1))) struct TransitionTests {
    static let ruleset = """
        networks:
          - name: web
            entries: [198.51.100.0/24]
            services: [tcp/443]
        outgoing:
          - to: web
        """

    /// A database with one approved version, a fake kernel, a runner started on them.
    struct Rig {
        let path = NSTemporaryDirectory() + "cordon-transition-\(UUID().uuidString).db"
        let store: FlowStore
        let backend = FakeBackend()
        let world = World()
        let runner: TransitionRunner
        static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

        init(approve: Bool = true, start: Bool = true) throws {
            store = try FlowStore(path: path)
            if approve { try store.approve(content: TransitionTests.ruleset, source: "t.yaml", operator: "ann", acceptedRisks: [], reason: "") }
            runner = try TransitionRunner(backend: backend, store: store, environment: world.environment, logger: Self.quiet)
            if start { try runner.start() }
        }

        func remove() { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }

        func handle(_ event: Engine.Event, by name: String = "ann", action: String? = nil) -> Answer {
            runner.handle(Engine.Request(event, operator: name, action: action))
        }

        func enforce(_ window: Int64 = 120) -> Answer { handle(.enforce(approved: 1, confirmWithin: window)) }
        var base: FirewallTable? { backend.tables[CordonTables.baseName] }
        var overlay: FirewallTable? { backend.tables[CordonTables.isolationName] }
        var armed: Bool { base?.set(named: CordonTables.armedSetName) != nil }
        var policy: FirewallChain.Policy? { base?.chains.first { $0.hook == .input }?.policy }
        func decisions() throws -> [(String, String)] { try store.decisions().map { ($0.action, $0.outcome) } }
        func persisted() throws -> HostState { try store.hostState() }

        /// Makes every write of the state fail, as a full disk does, until `heal`.
        func breakWrites() throws {
            try store.pool.write { db in
                try db.execute(sql: "CREATE TRIGGER full_insert BEFORE INSERT ON agent_state BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
                try db.execute(sql: "CREATE TRIGGER full_update BEFORE UPDATE ON agent_state BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
            }
        }
        func heal() throws {
            try store.pool.write { db in
                try db.execute(sql: "DROP TRIGGER full_insert")
                try db.execute(sql: "DROP TRIGGER full_update")
            }
        }
    }

    // MARK: Start

    @Test("start installs discovery, and nothing else, on a new database")
    func startInstallsDiscovery() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.policy == .accept && rig.overlay == nil)
        #expect(rig.backend.batches.count == 1, "one batch for both tables")
        #expect(try rig.persisted() == HostState())
    }

    @Test("start after a crash during the enforcement check rolls back: the check never passed")
    func startRollsBackAnUncheckedEnforcement() throws {
        let rig = try Rig()
        defer { rig.remove() }
        var state = HostState()
        state.enforcement = EnforcementState(mode: .enforce, version: 1, confirmDeadline: 1_000_100, confirmWindow: 100, checking: true)
        try rig.store.commitTransition(state: state, management: nil, logGroup: nil, actions: [], supersedeIsolatesBy: [], entries: [])
        let again = try TransitionRunner(backend: rig.backend, store: rig.store, environment: rig.world.environment, logger: Rig.quiet)
        try again.start()
        #expect(try rig.persisted().enforcement == EnforcementState())
        #expect(rig.policy == .accept)
        #expect(try rig.decisions().last! == ("rollback", "success: back to discovery"))
    }

    @Test("start honours a deadline that passed while the agent was down, and re-arms one that did not")
    func startHonoursTheDeadline() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce(60).ok)
        let restarted = { try TransitionRunner(backend: rig.backend, store: rig.store, environment: rig.world.environment, logger: Rig.quiet) }
        rig.world.advance(30)
        try restarted().start()
        #expect(rig.armed, "30 s left: still armed")
        #expect(try rig.persisted().enforcement.confirmDeadline == 1_000_060)
        rig.world.advance(31)
        try restarted().start()
        #expect(try rig.persisted().enforcement.mode == .discovery)
        #expect(rig.policy == .accept)
    }

    @Test("start finishes an interrupted release by isolating again, and adopts an overlay no record mentions")
    func startIsolatesAfterAnInterruptedReleaseAndAdoptsAnUnrecordedOverlay() throws {
        let rig = try Rig()
        defer { rig.remove() }
        var state = HostState()
        state.isolation = IsolationState(isolated: true, since: 1, operator: "ivy", reason: "x", releasing: "r1")
        try rig.store.commitTransition(state: state, management: nil, logGroup: nil, actions: [], supersedeIsolatesBy: [], entries: [])
        try TransitionRunner(backend: rig.backend, store: rig.store, environment: rig.world.environment, logger: Rig.quiet).start()
        #expect(rig.overlay != nil)
        #expect(try rig.persisted().isolation.releasing == nil && rig.persisted().isolation.isolated)

        let other = try Rig()
        defer { other.remove() }
        try other.backend.replace(CordonTables.isolation(management: ManagementChannel()))
        try TransitionRunner(backend: other.backend, store: other.store, environment: other.world.environment, logger: Rig.quiet).start()
        #expect(try other.persisted().isolation.isolated)
        #expect(try other.persisted().isolation.operator == "unknown (found in the kernel)")
    }

    @Test("a state record that cannot be decoded is an error, not a default")
    func undecodableStateIsAnError() throws {
        let rig = try Rig()
        defer { rig.remove() }
        try rig.store.setState("enforcement", #"{"mode":"enforce"}"#)
        let restarted = try TransitionRunner(backend: rig.backend, store: rig.store, environment: rig.world.environment, logger: Rig.quiet)
        #expect(throws: AgentError.self) { try restarted.start() }
        let answer = rig.enforce()
        #expect(!answer.ok && answer.message.contains("agent_state 'enforcement' is unreadable"), "\(answer.message)")
        // Isolation does not wait for a readable record, and leaves the record for an operator.
        #expect(restarted.handle(Engine.Request(.isolate(reason: "", via: "test"), operator: "ivy")).ok)
        #expect(rig.overlay != nil)
        #expect(try rig.store.state("enforcement") == #"{"mode":"enforce"}"#)
        #expect(try rig.decisions().last! == ("isolate", "success (test)"))
    }

    // MARK: Enforce, confirm, deadline, discover

    @Test("enforce installs the armed table, persists it as checked, logs success; confirm removes the switch")
    func enforceThenConfirm() throws {
        let rig = try Rig()
        defer { rig.remove() }
        let answer = rig.enforce(120)
        #expect(answer.ok && answer.message.contains("collectors reachable: 192.0.2.20:9000"), "\(answer.message)")
        #expect(rig.policy == .drop && rig.armed)
        #expect(try rig.persisted().enforcement == EnforcementState(mode: .enforce, version: 1, confirmDeadline: 1_000_120, confirmWindow: 120))
        #expect(try rig.decisions().last!.0 == "enforce" && rig.decisions().last!.1.hasPrefix("success: awaiting confirmation"))
        #expect(rig.handle(.confirm).ok)
        #expect(rig.policy == .drop && !rig.armed)
        #expect(try rig.persisted().enforcement == EnforcementState(mode: .enforce, version: 1, confirmedVersion: 1))
        #expect(!rig.handle(.confirm).ok, "nothing left to confirm")
    }

    @Test("an enforcement whose collector check fails rolls back at once, and the log says both")
    func failedCheckRollsBack() throws {
        let rig = try Rig()
        defer { rig.remove() }
        rig.world.failing.withLock { $0 = ["collector 192.0.2.20:9000 unreachable (timeout)"] }
        let answer = rig.enforce()
        #expect(!answer.ok && answer.message.contains("management channel check failed"))
        #expect(rig.policy == .accept)
        #expect(try rig.persisted().enforcement == EnforcementState())
        let tail = try rig.decisions().suffix(2)
        #expect(tail.map(\.0) == ["enforce", "rollback"] && tail.first!.1.hasPrefix("failed: management channel check failed"))
    }

    @Test("refused by the kernel: nothing changes, the failure is logged; unknown outcome: the previous tables go back")
    func enforceKernelFailures() throws {
        let rig = try Rig()
        defer { rig.remove() }
        rig.backend.failNext(.refuse)
        let refused = rig.enforce()
        #expect(!refused.ok && refused.message.contains("nothing changed"))
        #expect(rig.policy == .accept && rig.world.probes.withLock { $0 } == 0)
        #expect(try rig.decisions().last!.1.hasPrefix("failed: refused by the fake kernel"))

        rig.backend.failNext(.unknown)
        let unknown = rig.enforce()
        #expect(!unknown.ok && unknown.message.contains("the previous state was put back"), "\(unknown.message)")
        #expect(rig.policy == .accept, "discovery's table is back")
        #expect(try rig.persisted().enforcement == EnforcementState())

        rig.backend.failNext(.unknown, .refuse)
        let worse = rig.enforce()
        #expect(!worse.ok && worse.message.contains("putting the previous state back failed too"))
    }

    @Test("an approved version edited in the database is never installed")
    func editedVersionIsRefused() throws {
        let rig = try Rig()
        defer { rig.remove() }
        try rig.store.pool.write { db in
            try db.execute(sql: "DROP TRIGGER rulesets_append_only_update")
            try db.execute(sql: "UPDATE rulesets SET content = replace(content, 'tcp/443', 'tcp/1-65535')")
        }
        let answer = rig.enforce()
        #expect(!answer.ok && answer.message.contains("does not match its digest"))
        #expect(rig.policy == .accept && rig.backend.batches.count == 1)
    }

    @Test("no approved version, or a window out of range: refused before anything is touched")
    func enforceRefusals() throws {
        let rig = try Rig(approve: false)
        defer { rig.remove() }
        #expect(!rig.handle(.enforce(approved: nil, confirmWithin: 120)).ok)
        let rig2 = try Rig()
        defer { rig2.remove() }
        #expect(rig2.handle(.enforce(approved: 1, confirmWithin: 0)).message.contains("confirm_within"))
        #expect(rig.backend.batches.count == 1 && rig2.backend.batches.count == 1)
    }

    @Test("the deadline rolls back by itself, to the confirmed version when there is one")
    func deadlineRollsBack() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce(10).ok && rig.handle(.confirm).ok)
        try rig.store.approve(content: Self.ruleset + "\n# v2\n", source: "t.yaml", operator: "ann", acceptedRisks: [], reason: "")
        #expect(rig.handle(.enforce(approved: 2, confirmWithin: 10)).ok)
        #expect(rig.base?.chains.contains { $0.name == CordonTables.previousPrefix + "input" } == true, "falls back to version 1 in the kernel")
        rig.runner.tick()
        #expect(try rig.persisted().enforcement.version == 2, "not yet")
        rig.world.advance(10)
        rig.runner.tick()
        #expect(try rig.persisted().enforcement == EnforcementState(mode: .enforce, version: 1, confirmedVersion: 1))
        #expect(!rig.armed)
        #expect(try rig.decisions().last! == ("rollback", "success: back to ruleset version 1"))
    }

    @Test("a rollback the kernel refuses is retried, backing off so that the log is not flooded")
    func failedRollbackIsRetried() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce(5).ok)
        rig.world.advance(5)
        rig.backend.failNext(.refuse)
        rig.runner.tick()
        #expect(try rig.persisted().enforcement.mode == .enforce && rig.policy == .drop)
        let entries = try rig.decisions().count
        rig.runner.tick()
        #expect(try rig.decisions().count == entries, "not again at once")
        rig.world.advance(1)
        rig.runner.tick()
        #expect(try rig.persisted().enforcement.mode == .discovery && rig.policy == .accept)
    }

    @Test("discover returns to the accept-all table from any mode")
    func discover() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce().ok && rig.handle(.confirm).ok)
        #expect(rig.handle(.discover(reason: "done")).ok)
        #expect(try rig.policy == .accept && (rig.persisted()) == HostState())
    }

    // MARK: Isolation

    @Test("isolate installs the overlay over the base table, settles its action; again is a recorded no-op")
    func isolate() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce().ok)
        let id = try rig.store.requestAction("isolate", operator: "ivy", reason: "x")
        #expect(rig.handle(.isolate(reason: "x", via: "test"), by: "ivy", action: id).ok)
        #expect(rig.overlay != nil && rig.policy == .drop && rig.armed, "the base table is untouched")
        #expect(try rig.store.actions().last?.status == .applied)
        let again = try rig.store.requestAction("isolate", operator: "ivy", reason: "x")
        #expect(rig.handle(.isolate(reason: "x", via: "test"), by: "ivy", action: again).message.contains("already isolated"))
        #expect(try rig.store.actions().last?.status == .noop)
    }

    @Test("an isolation whose kernel answer is lost stands (the stricter state); one refused fails its action")
    func isolateKernelFailures() throws {
        let rig = try Rig()
        defer { rig.remove() }
        rig.backend.failNext(.refuse)
        let id = try rig.store.requestAction("isolate", operator: "ivy", reason: "")
        #expect(!rig.handle(.isolate(reason: "", via: "test"), action: id).ok)
        #expect(try rig.store.actions().last?.status == .failed && !rig.persisted().isolation.isolated)
        rig.backend.failNext(.unknown)
        let answer = rig.handle(.isolate(reason: "", via: "test"))
        #expect(answer.ok && answer.message.contains("the guard verifies"))
        #expect(try rig.persisted().isolation.isolated)
    }

    @Test("a full disk never prevents isolation: the kernel first, the records once they can be written")
    func isolateOnAFullDisk() throws {
        let rig = try Rig()
        defer { rig.remove() }
        try rig.breakWrites()
        let answer = rig.handle(.isolate(reason: "disk full", via: "test"))
        #expect(answer.ok && answer.message.contains("could not record"), "\(answer.message)")
        #expect(rig.overlay != nil && rig.runner.unrecorded)
        #expect(try rig.runner.snapshot.isolation.isolated && !(rig.persisted().isolation.isolated))
        rig.runner.tick()
        #expect(rig.runner.unrecorded, "still full")
        try rig.heal()
        rig.runner.tick()
        #expect(try !rig.runner.unrecorded && (rig.persisted().isolation.isolated))
        #expect(try rig.decisions().last! == ("isolate", "success (test)"))
    }

    @Test("a failed write after an enforce keeps the state in force in memory (status says unrecorded) and writes it later, log entries included")
    func enforceWithAFailedWrite() throws {
        let rig = try Rig()
        defer { rig.remove() }
        try rig.breakWrites()
        let answer = rig.enforce(60)
        #expect(answer.ok && answer.message.contains("could not record"), "\(answer.message)")
        #expect(rig.policy == .drop && rig.runner.unrecorded)
        #expect(try rig.runner.snapshot.enforcement.version == 1 && (rig.persisted().enforcement.mode) == .discovery)
        // The deadline is kept in memory all the same: the rollback still comes.
        rig.world.advance(60)
        rig.runner.tick()
        #expect(rig.policy == .accept && rig.runner.snapshot.enforcement.mode == .discovery)
        try rig.heal()
        rig.runner.tick()
        #expect(try !rig.runner.unrecorded && (rig.persisted()) == HostState())
        #expect(try rig.decisions().suffix(2).map(\.0) == ["enforce", "rollback"], "the held-back entries are written in order")
    }

    @Test("a release whose request cannot be recorded is refused; an isolation is not")
    func emergencyRequestsOnAFullDisk() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        try rig.store.pool.write { db in
            try db.execute(sql: "CREATE TRIGGER no_actions BEFORE INSERT ON actions BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        }
        let release = Emergency.release(runner: rig.runner, store: rig.store, operator: "ivy", reason: "")
        #expect(!release.ok && release.message.contains("nothing changed") && rig.overlay != nil)
        try rig.backend.remove(table: CordonTables.isolationName)
        try rig.store.commitTransition(state: HostState(), management: nil, logGroup: nil, actions: [], supersedeIsolatesBy: [], entries: [])
        let isolate = Emergency.isolate(runner: rig.runner, store: rig.store, operator: "ivy", reason: "", via: "test")
        #expect(isolate.ok && isolate.message.contains("could not record the request") && rig.overlay != nil)
    }

    @Test("release removes the overlay, checks the collectors, and settles; a failed check isolates again")
    func release() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        let id = try rig.store.requestAction("release", operator: "ivy", reason: "fixed")
        let released = rig.handle(.release(reason: "fixed"), by: "ivy", action: id)
        #expect(try released.ok && rig.overlay == nil && !(rig.persisted().isolation.isolated))
        #expect(try rig.store.actions().last?.status == .applied)

        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        rig.world.failing.withLock { $0 = ["collector 192.0.2.20:9000 unreachable"] }
        let started = rig.world.time.withLock { $0 }
        let failed = rig.handle(.release(reason: "fixed"), by: "ivy")
        #expect(!failed.ok && failed.message.contains("isolated again"))
        #expect(rig.world.time.withLock { $0 } - started >= 10, "kept trying for the whole check")
        #expect(try rig.overlay != nil && (rig.persisted().isolation) .operator == Engine.agentOperator)
        #expect(try rig.decisions().suffix(2).map(\.0) == ["release", "isolate"])
    }

    @Test("a re-isolation the kernel refuses after a failed release check is retried by the clock")
    func refusedReIsolationIsRetried() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        rig.world.failing.withLock { $0 = ["collector unreachable"] }
        // The removal goes through; the re-isolation after the failed check is refused.
        let backend = rig.backend
        rig.world.duringProbe.withLock { $0 = { if backend.state.withLock({ $0.failures.isEmpty }) { backend.failNext(.refuse) } } }
        #expect(!rig.handle(.release(reason: "")).ok)
        rig.world.duringProbe.withLock { $0 = nil }
        #expect(rig.overlay == nil && rig.runner.snapshot.isolation.releasing != nil)
        rig.world.advance(1)
        rig.runner.tick()
        #expect(rig.overlay != nil && rig.runner.snapshot.isolation.releasing == nil && rig.runner.snapshot.isolation.isolated)
    }

    @Test("stopping during a release's check isolates again; an overlay no record mentions is released only through the check")
    func releaseEdges() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        let runner = rig.runner
        rig.world.duringProbe.withLock { $0 = { runner.stop() } }
        #expect(!rig.handle(.release(reason: "")).ok)
        #expect(rig.overlay != nil, "never proven safe: isolated again")
        #expect(try rig.persisted().isolation.isolated && rig.persisted().isolation.releasing == nil)

        let other = try Rig()
        defer { other.remove() }
        try other.backend.replace(CordonTables.isolation(management: ManagementChannel()))
        let answer = other.handle(.release(reason: "found"))
        #expect(answer.ok && other.overlay == nil && other.world.probes.withLock { $0 } == 1, "\(answer.message)")
        #expect(try other.decisions().last! == ("release", "success: collectors reachable"))
    }

    @Test("a request refused before anything changed settles its action as failed: nothing stays pending")
    func refusedRequestsDoNotStayPending() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        let (runner, store) = (rig.runner, rig.store)
        let second = Mutex<Answer?>(nil)
        rig.world.duringProbe.withLock {
            $0 = { if second.withLock({ $0 }) == nil { second.withLock { $0 = Emergency.release(runner: runner, store: store, operator: "b", reason: "") } } }
        }
        #expect(Emergency.release(runner: runner, store: store, operator: "a", reason: "").ok)
        rig.world.duringProbe.withLock { $0 = nil }
        #expect(second.withLock { $0 }?.message.contains("being checked already") == true)
        let statuses = try rig.store.actions().map(\.status)
        #expect(!statuses.contains(.pending), "\(statuses)")
    }

    @Test("release when not isolated is a no-op that still supersedes pending isolates")
    func releaseSupersedes() throws {
        let rig = try Rig()
        defer { rig.remove() }
        let pending = try rig.store.requestAction("isolate", operator: "ivy", reason: "")
        let id = try rig.store.requestAction("release", operator: "ivy", reason: "")
        #expect(rig.handle(.release(reason: ""), action: id).message.contains("not isolated"))
        #expect(try rig.store.actionStatus(pending) == .superseded)
        #expect(!rig.handle(.isolate(reason: "", via: "test"), action: pending).ok, "a superseded isolate is not applied")
        #expect(rig.overlay == nil)
    }

    @Test("no lock is held across a check: status, the guard and an isolate all go through while a release checks; the isolate wins")
    func commandsArriveDuringARelease() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.handle(.isolate(reason: "", via: "test")).ok)
        let runner = rig.runner
        rig.world.duringProbe.withLock {
            $0 = {
                // These would deadlock if the release held the runner's lock while checking.
                #expect(!runner.snapshot.required.overlay, "the overlay is out while the release checks")
                _ = runner.handle(Engine.Request(.tampered("test")))
                #expect(runner.handle(Engine.Request(.isolate(reason: "again", via: "test"), operator: "eve")).ok)
            }
        }
        let answer = rig.handle(.release(reason: ""))
        rig.world.duringProbe.withLock { $0 = nil }
        #expect(!answer.ok && answer.message.contains("isolated again by eve during the release"), "\(answer.message)")
        #expect(try rig.overlay != nil && (rig.persisted().isolation.operator) == "eve")
    }

    @Test("an enforce superseded while its check runs does not overwrite what came after")
    func enforceSupersededDuringItsCheck() throws {
        let rig = try Rig()
        defer { rig.remove() }
        let runner = rig.runner
        rig.world.duringProbe.withLock { $0 = { _ = runner.handle(Engine.Request(.discover(reason: "changed my mind"))) } }
        let answer = rig.enforce()
        rig.world.duringProbe.withLock { $0 = nil }
        #expect(!answer.ok && answer.message.contains("superseded"))
        #expect(try rig.policy == .accept && (rig.persisted()) == HostState())
    }

    // MARK: Guard and stop

    @Test("a guard restore puts back exactly what the current state requires, both tables in one batch")
    func guardRestoresTheCurrentState() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce().ok && rig.handle(.isolate(reason: "", via: "test")).ok)
        let before = rig.backend.tables
        try rig.backend.remove(table: CordonTables.baseName)
        try rig.backend.remove(table: CordonTables.isolationName)
        let batches = rig.backend.batches.count
        #expect(rig.handle(.tampered("table inet cordon removed")).ok)
        #expect(rig.backend.batches.count == batches + 1)
        #expect(rig.overlay == before[CordonTables.isolationName])
        #expect(rig.base?.chains == before[CordonTables.baseName]?.chains)
        #expect(try rig.decisions().last! == ("restore", "success"))
    }

    @Test("stop rolls back an unconfirmed enforcement and removes discovery's table; an enforced ruleset stays; later commands are refused")
    func stop() throws {
        let rig = try Rig()
        defer { rig.remove() }
        #expect(rig.enforce().ok)
        rig.runner.stop()
        #expect(rig.base == nil, "rolled back to discovery, whose table goes")
        #expect(try rig.persisted() == HostState())
        #expect(rig.handle(.isolate(reason: "", via: "test")).message.contains("stopping"))

        let enforced = try Rig()
        defer { enforced.remove() }
        #expect(enforced.enforce().ok && enforced.handle(.confirm).ok)
        enforced.runner.stop()
        #expect(enforced.policy == .drop, "fail-closed")
    }
}

@Suite struct ProcessLockTests {
    @Test("an agent waits for a cordon command holding the database, and is refused at once by another agent")
    func agentWaitsForCommandsOnly() throws {
        let path = NSTemporaryDirectory() + "cordon-lock-\(UUID().uuidString)"
        defer { unlink(path) }
        let command = Mutex<ProcessLock?>(try ProcessLock(path: path, guarding: "test", holder: "cordon release"))
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { command.withLock { $0 = nil } }
        let started = Date()
        let agent = try ProcessLock(path: path, guarding: "test", waitingForCommands: 60)
        #expect(Date().timeIntervalSince(started) >= 0.4, "it waited for the command")
        // Refused rather than made to wait: waiting would take the whole 60 s.
        let refused = Date()
        #expect(throws: AgentError.self) { try ProcessLock(path: path, guarding: "test", waitingForCommands: 60) }
        #expect(Date().timeIntervalSince(refused) < 30, "another agent is refused, not made to wait")
        withExtendedLifetime(agent) {}
    }
}

@Suite struct EngineTests {
    @Test("the tables a state requires")
    func requiredTables() {
        var state = HostState()
        #expect(state.required == RequiredTables(base: .discovery, overlay: false))
        state.enforcement = EnforcementState(mode: .enforce, version: 2, confirmDeadline: 50, confirmWindow: 10, confirmedVersion: 1)
        state.isolation = IsolationState(isolated: true)
        #expect(state.required == RequiredTables(base: .enforcement(version: 2, deadline: 50, fallback: 1), overlay: true))
        state.isolation.releasing = "r"
        #expect(!state.required.overlay)
        state.enforcement = EnforcementState(mode: .enforce, version: 2, confirmedVersion: 2)
        #expect(state.required.base == .enforcement(version: 2, deadline: nil, fallback: nil))
    }

    @Test("decisions that change nothing say so and touch nothing")
    func refusals() {
        let state = HostState()
        for event: Engine.Event in [.confirm, .tick, .enforce(approved: nil, confirmWithin: 10), .enforce(approved: 1, confirmWithin: 100_000)] {
            let t = Engine.decide(state, Engine.Request(event, operator: "a"), now: 100)
            #expect(t.kernel.isEmpty && t.log.isEmpty && t.state == state, "\(event)")
        }
        #expect(!Engine.decide(state, Engine.Request(.confirm, operator: "a"), now: 100).answer.ok)
    }

    @Test("loosening decisions put the old tables back when the kernel's answer is lost; stricter ones keep theirs")
    func unknownOutcomePolicy() {
        var isolated = HostState()
        isolated.isolation = IsolationState(isolated: true)
        let cases: [(HostState, Engine.Event, Transition.UnknownOutcome)] = [
            (HostState(), .enforce(approved: 1, confirmWithin: 10), .restoreOld),
            (HostState(), .discover(reason: ""), .restoreOld),
            (isolated, .release(reason: ""), .restoreOld),
            (HostState(), .isolate(reason: "", via: ""), .keepNew),
            (HostState(), .tampered(""), .keepNew),
            (HostState(), .start(overlayInKernel: false), .keepNew),
        ]
        for (state, event, expected) in cases {
            #expect(Engine.decide(state, Engine.Request(event, operator: "a"), now: 1).onUnknown == expected, "\(event)")
        }
    }

    @Test("a release never loses to an earlier isolate, and a stale check result changes nothing")
    func staleCheckResults() {
        var isolated = HostState()
        isolated.isolation = IsolationState(isolated: true, operator: "ivy")
        var releasing = isolated
        releasing.isolation.releasing = "r"
        let stale = Engine.decide(isolated, Engine.Request(.releaseChecked(after: releasing, failure: nil, reason: ""), operator: "a"), now: 1)
        #expect(stale.state == isolated && stale.kernel.isEmpty && !stale.answer.ok)
        let release = Engine.decide(isolated, Engine.Request(.release(reason: ""), operator: "a", action: "r"), now: 1)
        #expect(release.supersedesIsolates && release.state == releasing && release.kernel == KernelChange(overlay: .remove))
    }
}
