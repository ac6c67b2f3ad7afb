import CordonCore
import CordonStore
import Foundation
import Synchronization

/// Whether the isolation overlay is in force, persisted so that the agent adopts an isolation
/// the CLI applied while it was down, and so that a restart never forgets one.
public struct IsolationState: Codable, Sendable, Equatable {
    public var isolated = false
    /// Unix seconds.
    public var since: Int64?
    public var `operator`: String?
    public var reason: String?
    /// The kernel handle of the overlay table as applied: release deletes exactly that table.
    public var handle: UInt64?

    public init() {}
}

/// Emergency isolation: a separate table (`CordonTables.isolation`) that lets only the management
/// channel through, on top of whatever mode the base table is in, so that releasing it returns
/// the host exactly to that mode. Used by the agent (control commands) and, when no agent answers,
/// by the CLI directly: emergency must not depend on the daemon being healthy.
///
/// Every request is an action (`cordon actions`) and a decision-log entry.
public final class Isolator: Sendable {
    static let stateName = "isolation"
    /// How long a release waits for every collector to accept a connection.
    public static let releaseCheckSeconds: Double = 10

    private let backend: any FirewallBackend
    private let store: FlowStore
    private let management: @Sendable () -> ManagementChannel
    private let log: @Sendable (String) -> Void
    private let state: Mutex<IsolationState>

    /// - Parameter management: the channel to let through, read at each apply.
    public init(backend: any FirewallBackend, store: FlowStore, management: @escaping @Sendable () -> ManagementChannel,
                log: @escaping @Sendable (String) -> Void) throws {
        self.backend = backend
        self.store = store
        self.management = management
        self.log = log
        var persisted = IsolationState()
        if let text = try store.state(Self.stateName) {
            do {
                persisted = try JSONDecoder().decode(IsolationState.self, from: Data(text.utf8))
            } catch {
                throw AgentError.invalidState("agent_state '\(Self.stateName)' is unreadable (\(error)); not guessing whether the host is isolated")
            }
        }
        state = Mutex(persisted)
    }

    public var snapshot: IsolationState { state.withLock { current($0) } }

    /// The persisted state, which another process (the CLI acting directly while this agent was
    /// slow to answer) may have changed; the cached one when the database cannot be read.
    private func current(_ cached: IsolationState) -> IsolationState {
        guard let text = try? store.state(Self.stateName),
              let persisted = try? JSONDecoder().decode(IsolationState.self, from: Data(text.utf8)) else { return cached }
        return persisted
    }

    private func persist(_ new: IsolationState) throws {
        try store.setState(Self.stateName, String(decoding: try JSONEncoder().encode(new), as: UTF8.self))
    }

    /// The decision-log entry; nil when written, else why not (the caller says so).
    @discardableResult
    private func record(_ action: String, operator name: String, reason: String, channel: ManagementChannel, outcome: String) -> String? {
        let table = CordonTables.isolation(management: channel).nftText
        do {
            try store.record(action: action, operator: name, reason: reason, policy: table, backend: backend.name,
                             whitelist: channel.summary, outcome: outcome)
            return nil
        } catch {
            log("could not write the decision log (\(action): \(outcome)): \(error)")
            return "the decision log (\(error))"
        }
    }

    @discardableResult
    private func settle(_ id: String?, _ status: ActionRecord.Status, _ detail: String) -> String? {
        guard let id else { return nil }
        do {
            try store.settleAction(id, status, detail: detail)
            return nil
        } catch {
            log("could not settle action \(id): \(error)")
            return "the action's status (\(error))"
        }
    }

    /// Installs the overlay (replacing any copy of it in one transaction) and records its handle.
    /// Throws only when the kernel refused; a state that could not be saved is returned, since
    /// the host is isolated all the same (and the agent adopts the overlay at its next start).
    @discardableResult
    private func apply(_ s: inout IsolationState, operator name: String, reason: String, channel: ManagementChannel) throws -> String? {
        try backend.replace(CordonTables.isolation(management: channel))
        var next = s
        next.isolated = true
        next.since = next.since ?? TimeText.now()
        next.operator = name
        next.reason = reason
        next.handle = try? backend.handle(of: CordonTables.isolationName)
        s = next
        do {
            try persist(next)
            return nil
        } catch {
            log("isolated, but the isolation state could not be saved: \(error)")
            return "the isolation state (\(error))"
        }
    }

    // MARK: Commands

    /// The kernel first, the records after: a database that cannot be written (a full disk, which
    /// a compromised host can cause) never prevents the isolation; the answer says what is missing.
    public func isolate(operator name: String, reason: String, via: String) -> ControlAnswer {
        state.withLock { s in
            s = current(s)
            let channel = management()
            var unrecorded: [String] = []
            var id: String?
            do { id = try store.requestAction("isolate", operator: name, reason: reason) } catch {
                unrecorded.append("the request (\(error))")
            }
            let present = (try? backend.handle(of: CordonTables.isolationName)).flatMap { $0 }
            if s.isolated, let present, present == s.handle {
                let since = s.since.map(TimeText.rfc3339) ?? "?"
                settle(id, .noop, "already isolated since \(since)")
                record("isolate", operator: name, reason: reason, channel: channel, outcome: "no-op: already isolated since \(since)")
                return ControlAnswer(ok: true, message: "already isolated since \(since) by \(s.operator ?? "?"); nothing changed")
            }
            // A release that came in meanwhile (from another process) wins.
            if let id, (try? store.actionStatus(id)) == .superseded {
                return ControlAnswer(ok: false, message: "superseded by a release before it was applied; not isolated")
            }
            do {
                if let missing = try apply(&s, operator: name, reason: reason, channel: channel) { unrecorded.append(missing) }
            } catch {
                settle(id, .failed, "\(error)")
                record("isolate", operator: name, reason: reason, channel: channel, outcome: "failed: \(error)")
                return ControlAnswer(ok: false, message: "isolation failed: \(error)")
            }
            if let missing = settle(id, .applied, "isolated (\(via)); management channel: \(channel.summary)") { unrecorded.append(missing) }
            if let missing = record("isolate", operator: name, reason: reason, channel: channel, outcome: "success (\(via))") {
                unrecorded.append(missing)
            }
            log("ISOLATED by \(name) (\(via)): only the management channel passes: \(channel.summary)")
            var message = "isolated: only the management channel passes (\(channel.summary))"
            if !unrecorded.isEmpty {
                message += "\nWARNING: isolated, but \(store.path) could not record " + unrecorded.joined(separator: ", ")
                    + "; the agent adopts the overlay from the kernel at its next start"
            }
            return ControlAnswer(ok: true, message: message)
        }
    }

    /// Deletes the overlay, then checks the management channel for up to `releaseCheckSeconds`;
    /// when it fails the overlay goes back (an escalation, logged) and the answer is a failure.
    public func release(operator name: String, reason: String) -> ControlAnswer {
        state.withLock { s in
            s = current(s)
            let channel = management()
            let id: String
            do {
                id = try store.requestAction("release", operator: name, reason: reason)
                // A release always wins over earlier isolates.
                try store.supersedePending("isolate", by: id)
            } catch {
                return ControlAnswer(ok: false, message: "cannot record the request: \(error)")
            }
            let present: UInt64?
            do {
                present = try backend.handle(of: CordonTables.isolationName)
            } catch {
                // Not knowing is not "not isolated".
                settle(id, .failed, "cannot read the kernel's tables: \(error)")
                record("release", operator: name, reason: reason, channel: channel, outcome: "failed: cannot read the kernel's tables: \(error)")
                return ControlAnswer(ok: false, message: "release failed, cannot read the kernel's tables: \(error)")
            }
            guard s.isolated || present != nil else {
                settle(id, .noop, "not isolated")
                record("release", operator: name, reason: reason, channel: channel, outcome: "no-op: not isolated")
                return ControlAnswer(ok: true, message: "not isolated; nothing changed")
            }
            do {
                if let handle = s.handle, present == handle {
                    try backend.remove(table: CordonTables.isolationName, handle: handle)
                } else {
                    // Re-created since (a restore by the guard, another tool): still ours by name.
                    try backend.remove(table: CordonTables.isolationName)
                }
            } catch {
                settle(id, .failed, "\(error)")
                record("release", operator: name, reason: reason, channel: channel, outcome: "failed: \(error); still isolated")
                return ControlAnswer(ok: false, message: "release failed, still isolated: \(error)")
            }

            // The host is in its base mode again; the collectors must be reachable through it.
            var failures = ManagementProbe.check(channel.collectors)
            let started = Date()
            while !failures.isEmpty && Date().timeIntervalSince(started) < Self.releaseCheckSeconds {
                usleep(500_000)
                failures = ManagementProbe.check(channel.collectors)
            }
            if !failures.isEmpty {
                let why = "management channel check failed: " + failures.joined(separator: "; ")
                var detail = "\(why); isolated again"
                do {
                    if let missing = try apply(&s, operator: Enforcer.agentOperator, reason: "escalation: \(why)", channel: channel) {
                        detail += " (could not record \(missing))"
                    }
                } catch {
                    detail = "\(why); RE-ISOLATION FAILED: \(error)"
                }
                settle(id, .failed, detail)
                record("release", operator: name, reason: reason, channel: channel, outcome: "failed: \(detail)")
                record("isolate", operator: Enforcer.agentOperator, reason: "escalation after a failed release: \(why)", channel: channel,
                       outcome: detail.contains("FAILED") ? "failed: \(detail)" : "success")
                log("release by \(name) failed its check; \(detail)")
                return ControlAnswer(ok: false, message: "release failed: \(detail)")
            }
            // Isolated again while the check ran (the CLI acting directly): that isolation stands.
            let now = current(s)
            if now.isolated, let handle = now.handle, handle != present {
                s = now
                settle(id, .failed, "isolated again by \(now.operator ?? "?") during the release")
                record("release", operator: name, reason: reason, channel: channel,
                       outcome: "failed: isolated again by \(now.operator ?? "?") during the release; still isolated")
                return ControlAnswer(ok: false, message: "isolated again by \(now.operator ?? "?") during the release; still isolated")
            }
            do {
                try persist(IsolationState())
            } catch {
                log("released, but could not persist it (a restart would isolate again): \(error)")
            }
            s = IsolationState()
            let checked = channel.collectors.isEmpty ? "no collector configured to check" : "collectors reachable"
            settle(id, .applied, "released; \(checked)")
            record("release", operator: name, reason: reason, channel: channel, outcome: "success: \(checked)")
            log("released by \(name); \(checked)")
            return ControlAnswer(ok: true, message: "released: the host is back in its previous mode; \(checked)")
        }
    }

    /// Re-installs the overlay when the state says the host is isolated (the guard).
    func reapply() throws {
        try state.withLock { s in
            s = current(s)
            guard s.isolated else { return }
            try apply(&s, operator: s.operator ?? Enforcer.agentOperator, reason: s.reason ?? "", channel: management())
        }
    }

    /// At agent start: settles what a crash left pending and puts the overlay back if the state
    /// says the host is isolated (the CLI may have isolated it while the agent was down). An
    /// overlay in the kernel that no record mentions (applied while the database could not be
    /// written) is adopted: the kernel says the host is isolated, so the agent says so too.
    func reconcile() {
        do { try store.failPendingActions(detail: "the agent restarted before the action completed") } catch {
            log("could not settle pending actions: \(error)")
        }
        state.withLock { s in
            var reason = "agent start: the host is isolated"
            if !s.isolated, let found = (try? backend.handle(of: CordonTables.isolationName)).flatMap({ $0 }) {
                s.isolated = true
                s.since = TimeText.now()
                s.operator = "unknown (found in the kernel)"
                s.reason = "an isolation overlay was in force at agent start without a record"
                s.handle = found
                reason = "agent start: an unrecorded isolation overlay was in the kernel; adopted"
            }
            guard s.isolated else { return }
            let channel = management()
            do {
                try apply(&s, operator: s.operator ?? Enforcer.agentOperator, reason: s.reason ?? "", channel: channel)
                record("reapply", operator: Enforcer.agentOperator, reason: reason, channel: channel, outcome: "success")
                log("isolation in force since \(s.since.map(TimeText.rfc3339) ?? "?") (adopted at start)")
            } catch {
                record("reapply", operator: Enforcer.agentOperator, reason: reason, channel: channel, outcome: "failed: \(error)")
                log("could not re-apply the isolation: \(error)")
            }
        }
    }
}
