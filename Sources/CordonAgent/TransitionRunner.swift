import CordonCore
import CordonStore
import Foundation
import Logging
import Synchronization

/// Carries out every decision of `Engine` the same way, whoever asked: the control socket, the
/// confirmation clock, the guard, the agent's start and stop, and the CLI acting without an agent.
///
/// The order, and what each failure does (also in Docs/architecture.md):
/// 1. Read the persisted state (the record is the truth; a record that cannot be decoded is an
///    error, except for isolation, which then decides on the state last known here).
/// 2. Decide (pure).
/// 3. Build the tables the decision needs. Failure (a ruleset missing or edited in the database):
///    nothing changed; the failure is logged.
/// 4. One netlink batch for every table it installs or removes. Refused: nothing changed; the
///    failure is logged and the action failed. Outcome unknown (the answer was lost): a decision
///    that loosens or tries rules (`restoreOld`) puts the previous state's tables back; a stricter
///    one (`keepNew`: isolation, rollback, restore) stands, and the guard verifies it.
/// 5. One database transaction: the state, the action's status, superseded isolates and the
///    decision-log entries. Failure (a full disk): the kernel is what counts; the state is kept
///    here and written at the next tick, and the answer says what is not recorded yet.
/// 6. Outside every lock: the follow-up check (collectors through new rules, or after a release),
///    whose result is one more event through the same path.
///
/// One lock serialises steps 1-5, which take milliseconds; no lock is held across a check, a
/// sleep or a subprocess. `snapshot` never waits for it.
public final class TransitionRunner: Sendable {
    /// How long a release waits for every collector to accept a connection.
    public static let releaseCheckSeconds: Double = 10
    /// Seconds the kernel's own confirmation switch waits past the deadline: the agent's rollback
    /// (a tick every 0.25 s, a replace in milliseconds) normally comes first.
    public static let kernelGrace: Int64 = 5

    /// What the runner needs from the world besides the kernel and the database; the tests give
    /// their own.
    public struct Environment: Sendable {
        /// The channel to install now (the agent's config, or the one the agent last installed).
        public var management: @Sendable () -> ManagementChannel
        public var logGroup: UInt16
        /// Collectors that did not accept a connection within the time given, one text each.
        public var probe: @Sendable ([ManagementChannel.Endpoint], Double) -> [String]
        /// Unix seconds.
        public var now: @Sendable () -> Double
        public var sleep: @Sendable (Double) -> Void
        public var releaseCheckSeconds: Double
        /// What a table made now puts in the name sets of a ruleset (the agent's `NameBook`).
        public var nameElements: @Sendable (Ruleset, Int64?) -> [String: [NameElement]] = { _, _ in [:] }
        /// nil when rulesets with name entries can be enforced; otherwise why not (no agent
        /// holding the answers, a kernel too old).
        public var namesUnavailable: @Sendable () -> String? = { "names are enforced only by a running agent" }
        /// Each transaction that changes the firewall, timed (the agent's metrics).
        public var applied: @Sendable (Duration, Bool) -> Void = { _, _ in }

        public init(management: @escaping @Sendable () -> ManagementChannel, logGroup: UInt16 = CordonTables.defaultLogGroup,
                    probe: @escaping @Sendable ([ManagementChannel.Endpoint], Double) -> [String] = ManagementProbe.check,
                    now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
                    sleep: @escaping @Sendable (Double) -> Void = { usleep(useconds_t($0 * 1e6)) },
                    releaseCheckSeconds: Double = TransitionRunner.releaseCheckSeconds) {
            self.management = management
            self.logGroup = logGroup
            self.probe = probe
            self.now = now
            self.sleep = sleep
            self.releaseCheckSeconds = releaseCheckSeconds
        }
    }

    private struct Unwritten: Sendable {
        var entries: [DecisionDraft] = []
        var actions: [(id: String, outcome: ActionOutcome)] = []
        var supersede: [String] = []
        var isEmpty: Bool { entries.isEmpty && actions.isEmpty && supersede.isEmpty }
    }

    private struct Inner: Sendable {
        var state: HostState
        var stopped = false
        /// The state and records a failed commit could not write: retried at every tick.
        var dirty = false
        var unwritten = Unwritten()
    }

    /// The result of one transaction (steps 1-5).
    private struct Outcome {
        var transition: Transition?
        var state: HostState
        var answer: Answer
        /// The kernel holds the decision's tables.
        var applied: Bool
    }

    public let backend: any FirewallBackend
    private let store: FlowStore
    private let environment: Environment
    private let logger: Logger
    private let inner: Mutex<Inner>
    private let published: Mutex<HostState>

    /// A record that cannot be decoded does not stop the runner: every transition reads the
    /// record again and refuses, except isolation, which decides on the defaults and leaves the
    /// unreadable record as it is for an operator to look at.
    public init(backend: any FirewallBackend, store: FlowStore, environment: Environment, logger: Logger) throws {
        self.backend = backend
        self.store = store
        self.environment = environment
        self.logger = logger
        let state = (try? store.hostState()) ?? HostState()
        inner = Mutex(Inner(state: state))
        published = Mutex(state)
    }

    /// The state in force, as of the last transition; never waits for one that is running.
    public var snapshot: HostState { published.withLock { $0 } }

    /// Records not yet written to the database (a full disk): status says so.
    public var unrecorded: Bool { dirtyFlag.load(ordering: .relaxed) }
    private let dirtyFlag = Atomic<Bool>(false)

    // MARK: Requests

    /// One request, with its follow-up check; the answer is the final outcome.
    public func handle(_ request: Engine.Request) -> Answer {
        // Counted before the first transaction: the clock must not take a check that is about
        // to run for one that was interrupted.
        let mayCheck: Bool
        switch request.event {
        case .enforce, .release: mayCheck = true
        default: mayCheck = false
        }
        if mayCheck { checksRunning.add(1, ordering: .relaxed) }
        defer { if mayCheck { checksRunning.subtract(1, ordering: .relaxed) } }
        let first = transact(request)
        guard first.applied, let followUp = first.transition?.followUp else { return first.answer }
        let collectors = environment.management().collectors
        switch followUp {
        case .checkEnforcement:
            let failures = environment.probe(collectors, 2)
            let second = transact(Engine.Request(.enforceChecked(after: first.state, failure: Self.joined(failures)),
                                                 operator: request.operator, action: request.action))
            guard second.answer.ok else { return second.answer }
            let checked = collectors.isEmpty ? "no collector configured to check"
                : "collectors reachable: \(collectors.map(\.hostPort).joined(separator: ", "))"
            return Answer(ok: true, message: second.answer.message.replacingOccurrences(of: ". Run `", with: "; \(checked).\nRun `"))
        case .checkRelease(let reason):
            let started = environment.now()
            var failures = environment.probe(collectors, 2)
            while !failures.isEmpty && environment.now() - started < environment.releaseCheckSeconds {
                environment.sleep(0.5)
                failures = environment.probe(collectors, 2)
            }
            return transact(Engine.Request(.releaseChecked(after: first.state, failure: Self.joined(failures), reason: reason),
                                           operator: request.operator, action: request.action)).answer
        }
    }

    private static func joined(_ failures: [String]) -> String? { failures.isEmpty ? nil : failures.joined(separator: "; ") }

    /// At agent start: settles what a crash left pending, then puts the kernel where the state
    /// says (adopting an isolation overlay no record mentions). Throws when the kernel refused:
    /// it keeps what it had.
    public func start() throws {
        do { try store.failPendingActions(detail: "the agent restarted before the action completed") } catch {
            logger.error("could not settle pending actions: \(error)")
        }
        // Not knowing whether an overlay is there is not "none": the start would remove it.
        let overlay: Bool
        do { overlay = try backend.handle(of: CordonTables.isolationName) != nil } catch {
            throw AgentError.invalidState("cannot read whether an isolation overlay is in the kernel: \(error); nothing changed")
        }
        let recorded = try? store.hostState().isolation
        let outcome = transact(Engine.Request(.start(overlayInKernel: overlay)))
        guard outcome.answer.ok else { throw AgentError.invalidState(outcome.answer.message) }
        logger.notice("\(outcome.answer.message)")
        // Someone isolated this host while its database could not be written (`cordon isolate` on a
        // full disk): kept, never undone, and an operator must hear of it, for nobody is on record.
        if overlay, let recorded, !recorded.isolated, recorded.releasing == nil {
            logger.warning("""
                an isolation overlay was in the kernel without a record (applied while the database could not be written?): \
                the host stays isolated, recorded now as a reapply by \(Engine.agentOperator); `cordon release` ends it
                """)
        }
    }

    /// Called a few times a second: the deadline needs no operator and no network; records a
    /// failed commit could not write are retried.
    public func tick() {
        let now = environment.now()
        guard now >= retryAfter.withLock({ $0 }) else { return writeHeldBack() }
        let state = snapshot
        var request: Engine.Request?
        if checksRunning.load(ordering: .relaxed) == 0 {
            // A check that can no longer answer (its result was refused, or its transition
            // failed): decide as if it failed, which restores the stricter state.
            if state.enforcement.checking {
                request = Engine.Request(.enforceChecked(after: state, failure: "the management channel check did not complete"))
            } else if state.isolation.releasing != nil {
                request = Engine.Request(.releaseChecked(after: state, failure: "the release's collector check did not complete",
                                                         reason: "release interrupted"))
            }
        }
        let e = state.enforcement
        if request == nil, e.unconfirmed, !e.checking, let deadline = e.confirmDeadline, Int64(now) >= deadline {
            request = Engine.Request(.tick)
        }
        if let request {
            let outcome = transact(request)
            if outcome.answer.ok {
                failedTicks.store(0, ordering: .relaxed)
            } else {
                // Retried, but not four times a second into the append-only log.
                let failures = failedTicks.add(1, ordering: .relaxed).newValue
                retryAfter.withLock { $0 = now + min(30, 0.25 * Double(1 << min(failures, 7))) }
                logger.critical("ROLLBACK OR RE-ISOLATION FAILED (\(failures) in a row), retrying: \(outcome.answer.message)")
            }
        }
        writeHeldBack()
    }

    private let checksRunning = Atomic<Int>(0)
    private let failedTicks = Atomic<Int>(0)
    private let retryAfter = Mutex<Double>(0)

    private func writeHeldBack() {
        inner.withLock { inner in
            guard inner.dirty else { return }
            if commit(inner.state, Unwritten(), &inner, channel: environment.management(),
                      stateReadable: (try? store.hostState()) != nil) == nil {
                logger.notice("the state and records held back by a failed write are in the database now")
            }
        }
    }

    /// A clean stop: an unconfirmed enforcement is rolled back, discovery's table goes, an
    /// enforced ruleset stays (fail-closed). Later requests are refused.
    public func stop() {
        let outcome = transact(Engine.Request(.stop))
        logger.notice("\(outcome.answer.message)")
    }

    // MARK: Steps 1-5

    private func transact(_ request: Engine.Request) -> Outcome {
        inner.withLock { inner -> Outcome in
            if inner.stopped {
                let message: String
                switch request.event {
                case .enforceChecked: message = "the agent stopped before the check finished; the enforcement was rolled back at stop"
                case .releaseChecked: message = "the agent stopped before the check finished; the host was isolated again at stop"
                default: message = "the agent is stopping; nothing changed"
                }
                return Outcome(state: inner.state, answer: Answer(ok: false, message: message), applied: false)
            }
            // One reading of the channel per transition: the tables installed and the log agree.
            let channel = environment.management()
            // 1. The record, unless a failed write left it behind what is in force.
            var current = inner.state
            var readable = true
            if !inner.dirty {
                do { current = try store.hostState() } catch {
                    guard case .isolate = request.event else {
                        return Outcome(state: inner.state, answer: Answer(ok: false, message: "\(error); nothing changed"), applied: false)
                    }
                    readable = false
                    logger.error("deciding on the state last known: \(error)")
                }
            }
            // An overlay no record mentions (isolated while the database could not be written) is
            // an isolation: releasing it goes through the collector check like any other.
            if case .release = request.event, !current.isolation.isolated,
               (try? backend.handle(of: CordonTables.isolationName)).flatMap({ $0 }) != nil {
                current.isolation = IsolationState(isolated: true, since: Int64(environment.now()), operator: "unknown (found in the kernel)",
                                                   reason: "an isolation overlay was in force without a record")
            }
            if case .isolate = request.event, let id = request.action, (try? store.actionStatus(id)) == .superseded {
                return Outcome(state: current, answer: Answer(ok: false, message: "superseded by a release before it was applied; not isolated"),
                               applied: false)
            }
            let now = environment.now()
            // 2.
            let transition = Engine.decide(current, request, now: Int64(now))
            if transition.changesNothing && transition.state == current {
                inner.state = current
                published.withLock { $0 = current }
                return Outcome(transition: transition, state: current, answer: transition.answer, applied: transition.answer.ok)
            }
            var state = transition.state
            var notes: [String] = []
            // 3. and 4.
            if !transition.kernel.isEmpty {
                let clock = ContinuousClock()
                let started = clock.now
                do {
                    try backend.apply(try tables(transition.kernel, now: now, channel: channel))
                    environment.applied(clock.now - started, true)
                } catch {
                    environment.applied(clock.now - started, false)
                    let changedNothing = (error as? any FirewallBackendError)?.changedNothing ?? !(error is any FirewallBackendError)
                    if changedNothing || transition.onUnknown == .restoreOld {
                        var what = changedNothing ? "nothing changed" : "outcome unknown"
                        if !changedNothing {
                            do {
                                try backend.apply(try tables(.all(current.required), now: now, channel: channel))
                                what += "; the previous state was put back"
                            } catch {
                                what += "; putting the previous state back failed too (\(error)): the guard keeps trying"
                            }
                        }
                        let failure = "\(error); \(what)"
                        var records = Unwritten()
                        if let entry = transition.failureLog {
                            var failed = entry
                            failed.outcome = "\(entry.outcome): \(failure)"
                            records.entries.append(draft(failed, channel: channel))
                        }
                        if let id = request.action { records.actions.append((id, ActionOutcome(.failed, failure))) }
                        if let problem = commit(current, records, &inner, channel: channel, stateReadable: readable) { logger.error("could not record the failure: \(problem)") }
                        inner.state = current
                        published.withLock { $0 = current }
                        logger.error("\(Self.name(request.event)) failed: \(failure)",
                                     metadata: ["action": "\(Self.name(request.event))", "operator": "\(request.operator)"])
                        return Outcome(transition: transition, state: current, answer: Answer(ok: false, message: "\(Self.name(request.event)) failed: \(failure)"),
                                       applied: false)
                    }
                    notes.append("the kernel's answer was lost (\(error)); the guard verifies the tables")
                }
                if transition.kernel.overlay == .install {
                    state.isolation.handle = (try? backend.handle(of: CordonTables.isolationName)).flatMap { $0 }
                }
            }
            // 5.
            var records = Unwritten()
            records.entries = transition.log.map { draft($0, channel: channel) }
            if let id = request.action, let outcome = transition.action { records.actions = [(id, outcome)] }
            if transition.supersedesIsolates, let id = request.action { records.supersede = [id] }
            if let problem = commit(state, records, &inner, channel: channel, stateReadable: readable) {
                notes.append("\(store.path) could not record it (\(problem)); retried until it can")
                logger.critical("state not written: \(problem)")
            }
            inner.state = state
            published.withLock { $0 = state }
            if case .stop = request.event { inner.stopped = true }
            var answer = transition.answer
            if !notes.isEmpty { answer.message += "\nWARNING: " + notes.joined(separator: "; ") }
            for entry in transition.log {
                logger.notice("\(entry.action) by \(entry.operator): \(entry.outcome)\(entry.reason.isEmpty ? "" : " (\(entry.reason))")",
                              metadata: ["action": "\(entry.action)", "operator": "\(entry.operator)", "mode": "\(state.enforcement.mode.rawValue)",
                                         "isolated": "\(state.required.overlay)", "ruleset": "\(state.enforcement.version.map(String.init) ?? "none")"])
            }
            return Outcome(transition: transition, state: state, answer: answer, applied: true)
        }
    }

    private static func name(_ event: Engine.Event) -> String {
        switch event {
        case .start: return "start"
        case .enforce, .enforceChecked: return "enforce"
        case .confirm: return "confirmation"
        case .tick: return "rollback"
        case .discover: return "return to discovery"
        case .isolate: return "isolation"
        case .release, .releaseChecked: return "release"
        case .tampered: return "restore"
        case .stop: return "stop"
        }
    }

    /// Writes the state with `new` after the records held back by an earlier failure; on a
    /// failure holds all of them back for the next try. nil when written, else why not.
    private func commit(_ state: HostState, _ new: Unwritten, _ inner: inout Inner, channel: ManagementChannel,
                        stateReadable: Bool) -> String? {
        var records = new
        if inner.dirty {
            records.entries = inner.unwritten.entries + new.entries
            records.actions = inner.unwritten.actions + new.actions
            records.supersede = inner.unwritten.supersede + new.supersede
        }
        let problem = write(state, records, channel: channel, stateReadable: stateReadable)
        inner.dirty = problem != nil
        inner.unwritten = problem == nil ? Unwritten() : records
        dirtyFlag.store(inner.dirty, ordering: .relaxed)
        return problem
    }

    /// nil when written, else why not. Records that cannot be decoded are left as they are
    /// (the log entries and action statuses are still written).
    private func write(_ state: HostState, _ records: Unwritten, channel: ManagementChannel, stateReadable readable: Bool) -> String? {
        do {
            let management = String(decoding: try JSONEncoder().encode(channel), as: UTF8.self)
            try store.commitTransition(state: readable ? state : nil, management: readable ? management : nil,
                                       logGroup: readable ? environment.logGroup : nil, actions: records.actions,
                                       supersedeIsolatesBy: records.supersede, entries: records.entries)
            if !readable { logger.critical("\(store.path): the state records cannot be decoded; left as they are, the log and actions written") }
            return nil
        } catch {
            return "\(error)"
        }
    }

    // MARK: Tables

    private func tables(_ change: KernelChange, now: Double, channel: ManagementChannel) throws -> [TableChange] {
        var result: [TableChange] = []
        switch change.overlay {
        case .install: result.append(.replace(CordonTables.isolation(management: channel)))
        case .remove: result.append(.remove(CordonTables.isolationName))
        case nil: break
        }
        // Names are learned in both modes, from the resolvers of the channel being installed.
        var names = CordonTables.NameCapture(resolvers: channel.resolvers, group: CordonTables.NameCapture.group(after: environment.logGroup))
        switch change.base {
        case .install(.discovery): result.append(.replace(CordonTables.discovery(names: names)))
        case .install(.enforcement(let version, let deadline, let fallback)):
            let ruleset = try load(version)
            let previous = try fallback.map(load)
            try refuseNames(ruleset, version: version)
            names.elements = environment.nameElements(ruleset, version)
            let openAfter = deadline.map { max(0, Int64((Double($0) - now).rounded(.up))) + Self.kernelGrace }
            result.append(.replace(CordonTables.enforcement(ruleset: ruleset, management: channel, logGroup: environment.logGroup,
                                                            openAfter: openAfter, fallback: previous, names: names)))
        case .remove: result.append(.remove(CordonTables.baseName))
        case nil: break
        }
        return result
    }

    /// A ruleset with name entries needs the agent holding the answers: without it the names'
    /// sets would stay empty and the host would break quietly, so it is refused and the kernel
    /// keeps what it has.
    func refuseNames(_ ruleset: Ruleset, version: Int64?) throws {
        guard let network = ruleset.namedNetworks.first, let reason = environment.namesUnavailable() else { return }
        let which = version.map { "ruleset version \($0)" } ?? "the ruleset"
        throw AgentError.invalidState("\(which) allows network '\(network.name)' by name (\(network.names.map(\.description).joined(separator: ", "))), "
            + "but \(reason); nothing changed")
    }

    private func load(_ version: Int64) throws -> Ruleset {
        guard let approved = try store.approvedRuleset(version: version) else {
            throw AgentError.invalidState("approved ruleset version \(version) is not in the database")
        }
        return try RulesetParser.parse(approved.content, file: "approved ruleset version \(version)")
    }

    private func draft(_ entry: LogEntry, channel: ManagementChannel) -> DecisionDraft {
        var policy = "", digest: String?
        switch entry.policy {
        case .ruleset(let version):
            if let version, let approved = try? store.ruleset(version: version) {
                policy = approved.content
                digest = approved.digest
            } else {
                policy = version.map { "ruleset version \($0)" } ?? "discovery"
            }
        case .overlay: policy = CordonTables.isolation(management: channel).nftText
        case .guardRestore: policy = "guard"
        case .none: policy = ""
        }
        return DecisionDraft(action: entry.action, operator: entry.operator, reason: entry.reason, policy: policy, policyDigest: digest,
                             backend: backend.name, whitelist: channel.whitelist, outcome: entry.outcome)
    }
}
