/// Every change of the host's firewall state, as one pure decision: given the persisted state, an
/// event and the time, which tables go into the kernel or out of it, the state to persist, the
/// decision-log entries and the answer. No kernel, no database, no clock: the runner
/// (`TransitionRunner` in CordonAgent) carries each decision out the same way, whatever asked
/// for it (an operator, the confirmation deadline, a failed check, the guard, the agent's start).
public enum Engine {
    /// Who the log names when the agent acts on its own (rollback, re-apply, escalation).
    public static let agentOperator = "cordon-agent"
    /// Accepted values of a confirmation window, in seconds.
    public static let confirmRange: ClosedRange<Int64> = 1...86_400

    public enum Event: Sendable, Equatable {
        /// The agent starts: put the kernel where the state says. `overlayInKernel`: an isolation
        /// overlay is there already (applied while the database could not be written).
        case start(overlayInKernel: Bool)
        /// `approved`: the latest approved version (nil: none approved yet).
        case enforce(approved: Int64?, confirmWithin: Int64)
        /// The management-channel check after an enforce, for the state it left (`after`).
        case enforceChecked(after: HostState, failure: String?)
        case confirm
        /// The clock: rolls back once an unconfirmed enforcement's deadline has passed.
        case tick
        case discover(reason: String)
        case isolate(reason: String, via: String)
        case release(reason: String)
        /// The collector check after a release, for the state it left (`after`).
        case releaseChecked(after: HostState, failure: String?, reason: String)
        /// The guard found Cordon's tables changed by someone else.
        case tampered(String)
        /// A clean stop: nothing unconfirmed may outlive the agent; discovery's table goes.
        case stop
    }

    public struct Request: Sendable, Equatable {
        public var event: Event
        public var `operator`: String
        /// The action (`cordon actions`) this request settles, if it is one.
        public var action: String?

        public init(_ event: Event, operator name: String = Engine.agentOperator, action: String? = nil) {
            self.event = event
            self.operator = name
            self.action = action
        }
    }

    /// Decides. `now` is Unix seconds.
    public static func decide(_ state: HostState, _ request: Request, now: Int64) -> Transition {
        let name = request.operator
        switch request.event {
        case .start(let overlayInKernel): return start(state, overlayInKernel: overlayInKernel, now: now)
        case .enforce(let approved, let window): return enforce(state, approved: approved, window: window, by: name, now: now)
        case .enforceChecked(let after, let failure): return enforceChecked(state, after: after, failure: failure, by: name)
        case .confirm: return confirm(state, by: name)
        case .tick: return tick(state, now: now)
        case .discover(let reason): return discover(state, reason: reason, by: name)
        case .isolate(let reason, let via): return isolate(state, reason: reason, via: via, by: name, now: now)
        case .release(let reason): return release(state, reason: reason, by: name, action: request.action)
        case .releaseChecked(let after, let failure, let reason):
            return releaseChecked(state, after: after, failure: failure, reason: reason, by: name)
        case .tampered(let what): return tampered(state, what: what)
        case .stop: return stop(state)
        }
    }

    static func describe(_ version: Int64?) -> String { version.map { "ruleset version \($0)" } ?? "discovery" }

    // MARK: Start, clock, guard, stop

    private static func start(_ state: HostState, overlayInKernel: Bool, now: Int64) -> Transition {
        var next = state
        var log: [LogEntry] = []
        var notes: [String] = []
        // Isolation first: it is the stricter. An interrupted release was never proven safe.
        if next.isolation.releasing != nil {
            next.isolation.releasing = nil
            log.append(LogEntry("isolate", by: agentOperator, reason: "agent start: a release was interrupted before its collector check passed",
                                outcome: "success: isolated again", policy: .overlay))
            notes.append("isolated again (a release was interrupted)")
        } else if !next.isolation.isolated && overlayInKernel {
            next.isolation = IsolationState(isolated: true, since: now, operator: "unknown (found in the kernel)",
                                            reason: "an isolation overlay was in force at agent start without a record")
            log.append(LogEntry("reapply", by: agentOperator, reason: "agent start: an unrecorded isolation overlay was in the kernel; adopted",
                                outcome: "success", policy: .overlay))
            notes.append("isolation adopted from the kernel")
        } else if next.isolation.isolated {
            log.append(LogEntry("reapply", by: agentOperator, reason: "agent start: the host is isolated", outcome: "success", policy: .overlay))
        }
        let e = next.enforcement
        if e.unconfirmed, e.checking || e.confirmDeadline! <= now {
            let why = e.checking ? "the agent stopped before the management channel check answered"
                : "not confirmed by \(TimeText.rfc3339(e.confirmDeadline!)); the agent was down at the deadline"
            next.enforcement = rolledBack(e)
            log.append(LogEntry("rollback", by: agentOperator, reason: why, outcome: "success: back to \(describe(e.confirmedVersion))",
                                policy: .ruleset(e.confirmedVersion)))
            notes.append("rolled back to \(describe(e.confirmedVersion))")
        } else if let version = e.inForce {
            log.append(LogEntry("reapply", by: agentOperator, reason: "agent start", outcome: "success: \(describe(version)) in force",
                                policy: .ruleset(version)))
        }
        var t = Transition(state: next, kernel: .all(next.required), log: log,
                           answer: Answer(ok: true, message: "firewall reconciled: \(describe(next.enforcement.inForce))"
                                          + (notes.isEmpty ? "" : "; " + notes.joined(separator: ", "))))
        t.failureLog = e.inForce == nil ? nil : LogEntry("reapply", by: agentOperator, reason: "agent start", outcome: "failed", policy: .none)
        t.onUnknown = .keepNew
        return t
    }

    private static func tick(_ state: HostState, now: Int64) -> Transition {
        let e = state.enforcement
        guard e.unconfirmed, !e.checking, let deadline = e.confirmDeadline, now >= deadline else { return .nothing(state) }
        let window = e.confirmWindow ?? 0
        return rollBack(state, reason: window > 0 ? "not confirmed within \(window) s" : "after a failed or unknown transition")
    }

    /// Back to the last confirmed state: discovery, or the ruleset an operator confirmed before.
    private static func rollBack(_ state: HostState, reason: String) -> Transition {
        let e = state.enforcement
        var next = state
        next.enforcement = rolledBack(e)
        var t = Transition(state: next, kernel: KernelChange(base: .install(next.required.base)),
                           log: [LogEntry("rollback", by: agentOperator, reason: reason, outcome: "success: back to \(describe(e.confirmedVersion))",
                                          policy: .ruleset(e.confirmedVersion))],
                           answer: Answer(ok: true, message: "rolled back to \(describe(e.confirmedVersion)): \(reason)"))
        t.failureLog = LogEntry("rollback", by: agentOperator, reason: reason, outcome: "failed", policy: .none)
        t.onUnknown = .keepNew
        return t
    }

    private static func rolledBack(_ e: EnforcementState) -> EnforcementState {
        guard let target = e.confirmedVersion else { return EnforcementState() }
        return EnforcementState(mode: .enforce, version: target, confirmedVersion: target)
    }

    private static func tampered(_ state: HostState, what: String) -> Transition {
        var t = Transition(state: state, kernel: .all(state.required),
                           log: [LogEntry("restore", by: agentOperator, reason: what, outcome: "success", policy: .guardRestore)],
                           answer: Answer(ok: true, message: "restored: \(what)"))
        t.failureLog = LogEntry("restore", by: agentOperator, reason: what, outcome: "failed", policy: .guardRestore)
        t.onUnknown = .keepNew
        return t
    }

    private static func stop(_ state: HostState) -> Transition {
        var t: Transition
        if state.enforcement.unconfirmed {
            t = rollBack(state, reason: "agent stopped before the enforcement was confirmed")
        } else {
            t = .nothing(state)
        }
        if state.isolation.releasing != nil {
            // A release whose check will never finish was never proven safe.
            t.state.isolation.releasing = nil
            t.kernel.overlay = .install
            t.log.append(LogEntry("isolate", by: agentOperator, reason: "agent stopped during a release's collector check",
                                  outcome: "success: isolated again", policy: .overlay))
            t.onUnknown = .keepNew
        }
        if t.state.enforcement.mode == .discovery {
            // Discovery's accept-all table only existed so that the kernel tracks connections.
            t.kernel.base = .remove
            t.answer = Answer(ok: true, message: "stopped; discovery's table removed")
        } else if !state.enforcement.unconfirmed {
            t.answer = Answer(ok: true, message: "stopped; leaving \(describe(t.state.enforcement.inForce)) in force (fail-closed)")
        }
        return t
    }

    // MARK: Enforcement

    private static func enforce(_ state: HostState, approved: Int64?, window: Int64, by name: String, now: Int64) -> Transition {
        guard confirmRange.contains(window) else {
            return .refused(state, "confirm_within must be \(confirmRange.lowerBound) to \(confirmRange.upperBound) seconds")
        }
        guard let version = approved else {
            return .refused(state, "no approved ruleset: review and approve one first (cordon approve)")
        }
        guard !state.enforcement.checking else { return .refused(state, "an enforcement is being checked; try again in a moment") }
        let reason = "enforce ruleset version \(version), confirm within \(window) s"
        var next = state
        next.enforcement = EnforcementState(mode: .enforce, version: version, confirmDeadline: now + window, confirmWindow: window,
                                            confirmedVersion: state.enforcement.confirmedVersion, checking: true)
        var t = Transition(state: next, kernel: KernelChange(base: .install(next.required.base)), log: [],
                           answer: Answer(ok: true, message: "enforcing ruleset version \(version); checking the management channel"))
        t.failureLog = LogEntry("enforce", by: name, reason: reason, outcome: "failed", policy: .ruleset(version))
        // A kernel that may hold rules nobody checked goes back to what was there.
        t.onUnknown = .restoreOld
        t.followUp = .checkEnforcement
        return t
    }

    private static func enforceChecked(_ state: HostState, after: HostState, failure: String?, by name: String) -> Transition {
        guard state.enforcement == after.enforcement, let version = state.enforcement.version,
              let deadline = state.enforcement.confirmDeadline else {
            return .refused(state, "the enforcement was superseded while its management channel was checked")
        }
        let window = state.enforcement.confirmWindow ?? 0
        let reason = "enforce ruleset version \(version), confirm within \(window) s"
        if let failure {
            let why = "management channel check failed: " + failure
            var t = rollBack(state, reason: why)
            t.log.insert(LogEntry("enforce", by: name, reason: reason, outcome: "failed: \(why); rolled back", policy: .ruleset(version)), at: 0)
            t.answer = Answer(ok: false, message: "\(why); rolled back to \(describe(t.state.enforcement.inForce))")
            return t
        }
        var next = state
        next.enforcement.checking = false
        return Transition(state: next, kernel: KernelChange(), log: [
            LogEntry("enforce", by: name, reason: reason, outcome: "success: awaiting confirmation until \(TimeText.rfc3339(deadline))",
                     policy: .ruleset(version)),
        ], answer: Answer(ok: true, message: """
            enforcing ruleset version \(version). Run `cordon confirm --operator NAME` by \(TimeText.rfc3339(deadline)), \
            or the host rolls back to \(describe(state.enforcement.confirmedVersion)).
            """))
    }

    private static func confirm(_ state: HostState, by name: String) -> Transition {
        let e = state.enforcement
        guard e.unconfirmed, !e.checking, let version = e.version, (e.confirmWindow ?? 0) > 0 else {
            return .refused(state, "nothing awaits confirmation (mode: \(describe(e.inForce)))")
        }
        var next = state
        next.enforcement = EnforcementState(mode: .enforce, version: version, confirmedVersion: version)
        // The same rules without the kernel's confirmation switch, in one transaction.
        var t = Transition(state: next, kernel: KernelChange(base: .install(next.required.base)),
                           log: [LogEntry("confirm", by: name, reason: "confirm ruleset version \(version)", outcome: "success",
                                          policy: .ruleset(version))],
                           answer: Answer(ok: true, message: "ruleset version \(version) confirmed: it stays in force"))
        t.failureLog = LogEntry("confirm", by: name, reason: "confirm ruleset version \(version)", outcome: "failed", policy: .ruleset(version))
        // Unknown: put the armed table back; the deadline still stands.
        t.onUnknown = .restoreOld
        return t
    }

    private static func discover(_ state: HostState, reason: String, by name: String) -> Transition {
        var next = state
        next.enforcement = EnforcementState()
        var t = Transition(state: next, kernel: KernelChange(base: .install(.discovery)),
                           log: [LogEntry("discover", by: name, reason: reason, outcome: "success", policy: .ruleset(nil))],
                           answer: Answer(ok: true, message: "discovery: nothing is blocked, flows are recorded"))
        t.failureLog = LogEntry("discover", by: name, reason: reason, outcome: "failed", policy: .ruleset(nil))
        t.onUnknown = .restoreOld
        return t
    }

    // MARK: Isolation

    private static func isolate(_ state: HostState, reason: String, via: String, by name: String, now: Int64) -> Transition {
        let i = state.isolation
        if i.isolated && i.releasing == nil {
            let since = i.since.map(TimeText.rfc3339) ?? "?"
            var t = Transition(state: state, kernel: KernelChange(overlay: .install),
                               log: [LogEntry("isolate", by: name, reason: reason, outcome: "no-op: already isolated since \(since)", policy: .overlay)],
                               answer: Answer(ok: true, message: "already isolated since \(since) by \(i.operator ?? "?"); nothing changed"))
            t.action = ActionOutcome(.noop, "already isolated since \(since)")
            t.failureLog = LogEntry("isolate", by: name, reason: reason, outcome: "failed", policy: .overlay)
            t.onUnknown = .keepNew
            return t
        }
        var next = state
        next.isolation = IsolationState(isolated: true, since: i.isolated ? i.since ?? now : now, operator: name, reason: reason)
        var t = Transition(state: next, kernel: KernelChange(overlay: .install),
                           log: [LogEntry("isolate", by: name, reason: reason, outcome: "success (\(via))", policy: .overlay)],
                           answer: Answer(ok: true, message: "isolated: only the management channel passes"))
        t.action = ActionOutcome(.applied, "isolated (\(via))")
        t.failureLog = LogEntry("isolate", by: name, reason: reason, outcome: "failed", policy: .overlay)
        // The stricter table: when unsure, keep asking the kernel for it.
        t.onUnknown = .keepNew
        return t
    }

    private static func release(_ state: HostState, reason: String, by name: String, action: String?) -> Transition {
        let i = state.isolation
        guard i.isolated else {
            var t = Transition(state: state, kernel: KernelChange(overlay: .remove),
                               log: [LogEntry("release", by: name, reason: reason, outcome: "no-op: not isolated", policy: .overlay)],
                               answer: Answer(ok: true, message: "not isolated; nothing changed"))
            t.action = ActionOutcome(.noop, "not isolated")
            t.supersedesIsolates = true
            t.failureLog = LogEntry("release", by: name, reason: reason, outcome: "failed", policy: .overlay)
            t.onUnknown = .restoreOld
            return t
        }
        guard i.releasing == nil else { return .refused(state, "a release is being checked already; try again in a moment") }
        var next = state
        next.isolation.releasing = action ?? "release"
        var t = Transition(state: next, kernel: KernelChange(overlay: .remove), log: [],
                           answer: Answer(ok: true, message: "released; checking the collectors"))
        t.supersedesIsolates = true
        t.failureLog = LogEntry("release", by: name, reason: reason, outcome: "failed; still isolated", policy: .overlay)
        t.onUnknown = .restoreOld
        t.followUp = .checkRelease(reason: reason)
        return t
    }

    private static func releaseChecked(_ state: HostState, after: HostState, failure: String?, reason: String, by name: String) -> Transition {
        guard state.isolation == after.isolation else {
            var t = Transition(state: state, kernel: KernelChange(),
                               log: [LogEntry("release", by: name, reason: reason, outcome: "failed: isolated again during the release; still isolated",
                                              policy: .overlay)],
                               answer: Answer(ok: false, message: "isolated again by \(state.isolation.operator ?? "?") during the release; still isolated"))
            t.action = ActionOutcome(.failed, "isolated again by \(state.isolation.operator ?? "?") during the release")
            return t
        }
        var next = state
        if let failure {
            let why = "management channel check failed: " + failure
            next.isolation.releasing = nil
            next.isolation.operator = agentOperator
            next.isolation.reason = "escalation: \(why)"
            var t = Transition(state: next, kernel: KernelChange(overlay: .install), log: [
                LogEntry("release", by: name, reason: reason, outcome: "failed: \(why); isolated again", policy: .overlay),
                LogEntry("isolate", by: agentOperator, reason: "escalation after a failed release: \(why)", outcome: "success", policy: .overlay),
            ], answer: Answer(ok: false, message: "release failed: \(why); isolated again"))
            t.action = ActionOutcome(.failed, "\(why); isolated again")
            t.failureLog = LogEntry("release", by: name, reason: reason, outcome: "failed: \(why); RE-ISOLATION FAILED", policy: .overlay)
            t.onUnknown = .keepNew
            return t
        }
        next.isolation = IsolationState()
        var t = Transition(state: next, kernel: KernelChange(), log: [
            LogEntry("release", by: name, reason: reason, outcome: "success: collectors reachable", policy: .overlay),
        ], answer: Answer(ok: true, message: "released: the host is back in its previous mode; collectors reachable"))
        t.action = ActionOutcome(.applied, "released; collectors reachable")
        return t
    }
}

/// What the runner does with one decision.
public struct Transition: Sendable, Equatable {
    /// The state to persist once the kernel holds `kernel`.
    public var state: HostState
    public var kernel: KernelChange
    /// Decision-log entries, written in the same database transaction as the state.
    public var log: [LogEntry]
    public var answer: Answer
    /// The status of the request's action, if it is one.
    public var action: ActionOutcome?
    /// Written instead of `log` when the kernel refuses the change (the runner adds why).
    public var failureLog: LogEntry?
    /// When the kernel's answer is lost (the change may or may not be in force).
    public var onUnknown: UnknownOutcome = .restoreOld
    /// A release marks the isolates still pending as superseded: a release always wins.
    public var supersedesIsolates = false
    /// Work after the transition, outside every lock: a check whose result is another event.
    public var followUp: FollowUp?

    public init(state: HostState, kernel: KernelChange, log: [LogEntry], answer: Answer) {
        self.state = state
        self.kernel = kernel
        self.log = log
        self.answer = answer
    }

    /// No change at all (the clock before the deadline).
    static func nothing(_ state: HostState) -> Transition {
        Transition(state: state, kernel: KernelChange(), log: [], answer: Answer(ok: true, message: "nothing to do"))
    }

    /// Refused before anything was touched.
    static func refused(_ state: HostState, _ message: String) -> Transition {
        Transition(state: state, kernel: KernelChange(), log: [], answer: Answer(ok: false, message: message))
    }

    public var changesNothing: Bool { kernel.isEmpty && log.isEmpty && action == nil && !supersedesIsolates && followUp == nil }

    public enum UnknownOutcome: Sendable, Equatable {
        /// Keep the new state: the runner re-installs its tables (the stricter ones, or a rollback).
        case keepNew
        /// Put the previous state's tables back: never leave unchecked rules behind.
        case restoreOld
    }

    public enum FollowUp: Sendable, Equatable {
        /// Connect to every collector through the rules just installed; `enforceChecked` follows.
        case checkEnforcement
        /// Connect to every collector for up to the release check's time; `releaseChecked` follows.
        case checkRelease(reason: String)
    }
}

/// Which of Cordon's tables one kernel transaction installs or removes.
public struct KernelChange: Sendable, Equatable {
    public enum Base: Sendable, Equatable {
        case install(RequiredTables.Base)
        case remove
    }
    public enum Overlay: Sendable, Equatable { case install, remove }
    public var base: Base?
    public var overlay: Overlay?

    public init(base: Base? = nil, overlay: Overlay? = nil) {
        self.base = base
        self.overlay = overlay
    }

    /// Every table a state requires.
    public static func all(_ required: RequiredTables) -> KernelChange {
        KernelChange(base: .install(required.base), overlay: required.overlay ? .install : .remove)
    }

    public var isEmpty: Bool { base == nil && overlay == nil }
}

/// One decision-log entry, before the runner fills in the policy text and the channel.
public struct LogEntry: Sendable, Equatable {
    public enum Policy: Sendable, Equatable {
        /// The ruleset version's content (nil: discovery).
        case ruleset(Int64?)
        /// The isolation overlay as installed.
        case overlay
        case guardRestore
        case none
    }
    public var action: String
    public var `operator`: String
    public var reason: String
    public var outcome: String
    public var policy: Policy

    public init(_ action: String, by name: String, reason: String, outcome: String, policy: Policy) {
        self.action = action
        self.operator = name
        self.reason = reason
        self.outcome = outcome
        self.policy = policy
    }
}

/// What a command's requester is told; on the control socket `{"ok": …, "message": …}`.
public struct Answer: Codable, Sendable, Equatable {
    public var ok: Bool
    public var message: String
    /// Set when the request itself was refused (`unknown_command`, `missing_field`, `busy`, …).
    public var error: String?
    public init(ok: Bool, message: String, error: String? = nil) {
        self.ok = ok
        self.message = message
        self.error = error
    }
}

/// What became of a requested action (`cordon actions`).
public enum ActionStatus: String, Codable, Sendable { case pending, applied, failed, noop, superseded }

public struct ActionOutcome: Sendable, Equatable {
    public var status: ActionStatus
    public var detail: String
    public init(_ status: ActionStatus, _ detail: String) {
        self.status = status
        self.detail = detail
    }
}
