#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import CordonStore
import Foundation
import Synchronization

/// The mode the host's firewall is in, persisted so that a restarted agent (after a crash, an
/// upgrade, a reboot) puts the kernel back exactly where the operators left it.
public struct EnforcementState: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable { case discovery, enforce }
    public var mode: Mode = .discovery
    /// The approved ruleset version in force while enforcing.
    public var version: Int64?
    /// Unix seconds by which `cordon confirm` must come, or the agent rolls back; nil once confirmed.
    public var confirmDeadline: Int64?
    /// Seconds the operator gave for confirmation (for the log of a rollback).
    public var confirmWindow: Int64?
    /// The last enforcement an operator confirmed: where a rollback returns to (nil: discovery).
    public var confirmedVersion: Int64?

    enum CodingKeys: String, CodingKey {
        case mode, version, confirmDeadline = "confirm_deadline", confirmWindow = "confirm_window"
        case confirmedVersion = "confirmed_version"
    }

    public init() {}
}

/// What the agent answers to a control command that changes the firewall.
public struct ControlAnswer: Codable, Sendable, Equatable {
    public var ok: Bool
    public var message: String
    public init(ok: Bool, message: String) {
        self.ok = ok
        self.message = message
    }
}

/// Moves the host between discovery and default-reject, one atomic kernel transaction per move,
/// with the ways back the product promises: a management-channel check right after enforcing,
/// a confirmation deadline (kept by the agent and, should it die, by the kernel), and
/// reconciliation on restart. Every move is a decision-log entry.
///
/// One lock serialises the control thread (commands) and the main loop (the deadline), so a
/// rollback can never interleave with an enforce.
///
/// The invariant every path keeps: when the kernel may hold rules nobody confirmed, the state says
/// so with a deadline, so that `tick` keeps trying to roll back until it succeeds.
public final class Enforcer: Sendable {
    static let stateName = "enforcement"
    /// The management channel and log group last installed: what `cordon render` shows, and
    /// what isolation uses when the agent is down.
    public static let managementName = "management"
    public static let logGroupName = "log_group"
    /// Who the log names when the agent acts on its own (rollback, re-apply).
    static let agentOperator = "cordon-agent"
    /// Seconds the kernel's own confirmation switch waits past the deadline: the agent's rollback
    /// (a tick every 0.25 s, a replace in milliseconds) normally comes first.
    public static let kernelGrace: Int64 = 5
    /// Accepted values of a confirmation window, in seconds.
    public static let confirmRange: ClosedRange<Int64> = 1...86_400

    private struct Inner {
        var state: EnforcementState
        /// Set by `stop`: a command accepted during shutdown must not change the firewall after it.
        var stopped = false
    }

    private let backend: any FirewallBackend
    private let store: FlowStore
    private let config: AgentConfig
    private let log: @Sendable (String) -> Void
    private let inner: Mutex<Inner>

    init(backend: any FirewallBackend, store: FlowStore, config: AgentConfig, log: @escaping @Sendable (String) -> Void) throws {
        self.backend = backend
        self.store = store
        self.config = config
        self.log = log
        var persisted = EnforcementState()
        if let text = try store.state(Self.stateName) {
            do {
                persisted = try JSONDecoder().decode(EnforcementState.self, from: Data(text.utf8))
            } catch {
                throw AgentError.invalidState("agent_state '\(Self.stateName)' is unreadable (\(error)); not guessing a firewall mode")
            }
        }
        inner = Mutex(Inner(state: persisted))
    }

    var snapshot: EnforcementState { inner.withLock { $0.state } }

    private typealias Prepared = (table: FirewallTable, ruleset: RulesetVersion?, management: ManagementChannel)

    /// The table for a state: discovery's accept-all, or the enforcement of an approved version.
    /// While unconfirmed (`openAfter`), the kernel's switch falls back to `fallback` (the last
    /// confirmed version; nil: discovery) when it expires.
    private func table(for version: Int64?, openAfter: Int64? = nil, fallback: Int64? = nil) throws -> Prepared {
        let management = config.effectiveManagement()
        guard let version else { return (CordonTables.discovery(), nil, management) }
        let (approved, ruleset) = try load(version)
        let previous = try fallback.map { try load($0).1 }
        return (CordonTables.enforcement(ruleset: ruleset, management: management, logGroup: config.logGroup,
                                         openAfter: openAfter, fallback: previous),
                approved, management)
    }

    /// The table the persisted state calls for: an unconfirmed enforcement armed with the time it
    /// has left and falling back to the last confirmed version.
    private func tableInForce(_ s: EnforcementState) throws -> Prepared {
        try table(for: s.mode == .enforce ? s.version : nil,
                  openAfter: s.confirmDeadline.map { Self.armedTimeout(until: $0, from: Date().timeIntervalSince1970) },
                  fallback: s.confirmDeadline == nil ? nil : s.confirmedVersion)
    }

    /// The management channel the agent last installed, from the database (nil before the first
    /// start). One that cannot be decoded is an error: guessing a channel could cut the collector.
    public static func persistedManagement(_ store: FlowStore) throws -> ManagementChannel? {
        guard let text = try store.state(managementName) else { return nil }
        do {
            return try JSONDecoder().decode(ManagementChannel.self, from: Data(text.utf8))
        } catch {
            throw AgentError.invalidState("agent_state '\(managementName)' in \(store.path) is unreadable (\(error)); not guessing a management channel")
        }
    }

    private func load(_ version: Int64) throws -> (RulesetVersion, Ruleset) {
        guard let approved = try store.approvedRuleset(version: version) else {
            throw AgentError.invalidState("approved ruleset version \(version) is not in the database")
        }
        return (approved, try RulesetParser.parse(approved.content, file: "approved ruleset version \(version)"))
    }

    /// One transaction: the mode, and the channel and log group it was installed with.
    private func persist(_ new: EnforcementState, management: ManagementChannel) throws {
        try store.setStates([
            (Self.stateName, String(decoding: try JSONEncoder().encode(new), as: UTF8.self)),
            ("mode", new.mode.rawValue),
            (Self.managementName, String(decoding: try JSONEncoder().encode(management), as: UTF8.self)),
            (Self.logGroupName, String(config.logGroup)),
        ])
    }

    private func record(_ action: String, operator name: String, reason: String, ruleset: RulesetVersion?,
                        management: ManagementChannel, outcome: String) {
        do {
            try store.record(action: action, operator: name, reason: reason, policy: ruleset?.content ?? "discovery",
                             policyDigest: ruleset?.digest, backend: backend.name, whitelist: management.summary, outcome: outcome)
        } catch {
            log("could not write the decision log (\(action): \(outcome)): \(error)")
        }
    }

    private static func describe(_ version: Int64?) -> String { version.map { "ruleset version \($0)" } ?? "discovery" }

    private static func changedNothing(_ error: any Error) -> Bool { (error as? any FirewallBackendError)?.changedNothing ?? false }

    /// Marks the kernel's content as unknown or unconfirmed with a deadline of now, so that the
    /// next tick rolls back; persisted if possible (a restart then does the same).
    private func rollBackSoon(_ s: inout EnforcementState, version: Int64) {
        var next = s
        next.mode = .enforce
        next.version = version
        next.confirmDeadline = TimeText.now()
        next.confirmWindow = 0
        s = next
        do { try persist(next, management: config.effectiveManagement()) } catch { log("could not persist the pending rollback: \(error)") }
    }

    /// Seconds until `deadline` plus the grace, never less than the grace: the armed set's timeout.
    private static func armedTimeout(until deadline: Int64, from now: Double) -> Int64 {
        max(0, Int64((Double(deadline) - now).rounded(.up))) + kernelGrace
    }

    // MARK: Start and stop

    /// Puts the kernel where the persisted state says, in one transaction: no gap when the rules
    /// of a killed agent are still in force. An unconfirmed enforcement is re-armed with the time
    /// it has left; a deadline that passed while the agent was down is honoured now.
    func reconcile() throws {
        try inner.withLock { inner in
            var s = inner.state
            defer { inner.state = s }
            if s.mode == .enforce, let deadline = s.confirmDeadline, deadline <= TimeText.now() {
                log("the confirmation deadline passed while the agent was down: rolling back")
                try rollBack(&s, reason: "not confirmed by \(TimeText.rfc3339(deadline)); the agent was down at the deadline")
                return
            }
            let target = s.mode == .enforce ? s.version : nil
            let prepared: Prepared
            do {
                prepared = try tableInForce(s)
                try backend.replace(prepared.table)
            } catch {
                if s.mode == .enforce {
                    record("reapply", operator: Self.agentOperator, reason: "agent start", ruleset: nil, management: config.effectiveManagement(),
                           outcome: "failed: \(error); the kernel keeps what it had")
                }
                throw error
            }
            try persist(s, management: prepared.management)
            if s.mode == .enforce {
                record("reapply", operator: Self.agentOperator, reason: "agent start", ruleset: prepared.ruleset,
                       management: prepared.management, outcome: "success: \(Self.describe(target)) in force")
            }
            log("firewall reconciled: \(Self.describe(target))\(s.confirmDeadline.map { ", awaiting confirmation until \(TimeText.rfc3339($0))" } ?? "")")
        }
    }

    /// Re-installs what the state says (the guard, after someone else changed the table): the
    /// same table, an unconfirmed one armed with the time it has left. Throws when refused.
    func reapply() throws {
        try inner.withLock { inner in
            guard !inner.stopped else { return }
            try backend.replace(tableInForce(inner.state).table)
        }
    }

    /// At a clean stop: discovery's accept-all table goes (it only existed for conntrack); an
    /// enforced ruleset stays (fail-closed); an unconfirmed one is rolled back first, since no
    /// agent will be there to do it at the deadline. Commands that arrive later are refused.
    func stop() {
        inner.withLock { inner in
            inner.stopped = true
            if inner.state.mode == .enforce, inner.state.confirmDeadline != nil {
                do {
                    try rollBack(&inner.state, reason: "agent stopped before the enforcement was confirmed")
                } catch {
                    log("rollback at stop failed (the kernel's confirmation switch still applies): \(error)")
                }
            }
            guard inner.state.mode == .discovery else {
                log("leaving \(Self.describe(inner.state.version)) in force (fail-closed)")
                return
            }
            do {
                try backend.remove(table: CordonTables.baseName)
            } catch {
                log("could not remove table inet \(CordonTables.baseName): \(error)")
            }
        }
    }

    // MARK: Commands

    func enforce(operator name: String, confirmWithin: Int64) -> ControlAnswer {
        guard Self.confirmRange.contains(confirmWithin) else {
            return ControlAnswer(ok: false, message: "confirm_within must be \(Self.confirmRange.lowerBound) to \(Self.confirmRange.upperBound) seconds")
        }
        return inner.withLock { inner in
            guard !inner.stopped else { return ControlAnswer(ok: false, message: "the agent is stopping; nothing changed") }
            var s = inner.state
            defer { inner.state = s }
            let approved: RulesetVersion
            do {
                guard let latest = try store.latestRuleset() else {
                    return ControlAnswer(ok: false, message: "no approved ruleset: review and approve one first (cordon approve)")
                }
                approved = latest
            } catch {
                return ControlAnswer(ok: false, message: "cannot read the approved rulesets: \(error)")
            }
            let reason = "enforce ruleset version \(approved.version), confirm within \(confirmWithin) s"
            // One base time for the agent's deadline and the kernel's switch: the collector check
            // below uses up the window, never the grace.
            let now = Date().timeIntervalSince1970
            let deadline = Int64((now + Double(confirmWithin)).rounded(.up))
            let prepared: Prepared
            do {
                prepared = try table(for: approved.version, openAfter: Self.armedTimeout(until: deadline, from: now), fallback: s.confirmedVersion)
            } catch {
                record("enforce", operator: name, reason: reason, ruleset: approved, management: config.effectiveManagement(),
                       outcome: "failed: \(error)")
                return ControlAnswer(ok: false, message: "enforce failed, nothing changed: \(error)")
            }
            do {
                try backend.replace(prepared.table)
            } catch {
                if Self.changedNothing(error) {
                    record("enforce", operator: name, reason: reason, ruleset: approved, management: prepared.management, outcome: "failed: \(error)")
                    return ControlAnswer(ok: false, message: "enforce failed, nothing changed: \(error)")
                }
                // The kernel may hold the new rules: treat them as unconfirmed and roll back now.
                record("enforce", operator: name, reason: reason, ruleset: approved, management: prepared.management,
                       outcome: "failed: \(error); outcome unknown, rolling back")
                rollBackSoon(&s, version: approved.version)
                return ControlAnswer(ok: false, message: "enforce failed with an unknown outcome (\(error)); rolling back to \(Self.describe(s.confirmedVersion))")
            }

            // The rules are in force; the management channel must still work through them.
            let failures = ManagementProbe.check(prepared.management.collectors)
            if !failures.isEmpty {
                let why = "management channel check failed: " + failures.joined(separator: "; ")
                record("enforce", operator: name, reason: reason, ruleset: approved, management: prepared.management,
                       outcome: "failed: \(why); rolled back")
                do {
                    try rollBack(&s, reason: why)
                } catch {
                    rollBackSoon(&s, version: approved.version)
                    return ControlAnswer(ok: false, message: "\(why); the rollback failed (\(error)) and is being retried")
                }
                return ControlAnswer(ok: false, message: "\(why); rolled back to \(Self.describe(s.mode == .enforce ? s.version : nil))")
            }

            var next = s
            next.mode = .enforce
            next.version = approved.version
            next.confirmDeadline = deadline
            next.confirmWindow = confirmWithin
            do {
                try persist(next, management: prepared.management)
            } catch {
                // Not persisted means a restart would not know the deadline: do not keep the rules.
                rollBackSoon(&s, version: approved.version)
                record("enforce", operator: name, reason: reason, ruleset: approved, management: prepared.management,
                       outcome: "failed: could not persist the enforcement (\(error)); rolling back")
                return ControlAnswer(ok: false, message: "could not persist the enforcement (\(error)); rolling back")
            }
            s = next
            let checked = prepared.management.collectors.isEmpty
                ? "no collector configured to check"
                : "collectors reachable: \(prepared.management.collectors.map(\.hostPort).joined(separator: ", "))"
            let deadlineText = TimeText.rfc3339(deadline)
            record("enforce", operator: name, reason: reason, ruleset: approved, management: prepared.management,
                   outcome: "success: \(checked); awaiting confirmation until \(deadlineText)")
            log("enforcing ruleset version \(approved.version) for \(name); rollback at \(deadlineText) unless confirmed")
            return ControlAnswer(ok: true, message: """
                enforcing ruleset version \(approved.version) (sha256 \(approved.digest.prefix(16))…); \(checked).
                Run `cordon confirm --operator NAME` by \(deadlineText), or the host rolls back to \(Self.describe(s.confirmedVersion)).
                """)
        }
    }

    func confirm(operator name: String) -> ControlAnswer {
        inner.withLock { inner in
            guard !inner.stopped else { return ControlAnswer(ok: false, message: "the agent is stopping; nothing changed") }
            var s = inner.state
            defer { inner.state = s }
            guard s.mode == .enforce, let deadline = s.confirmDeadline, let version = s.version, (s.confirmWindow ?? 0) > 0 else {
                return ControlAnswer(ok: false, message: "nothing awaits confirmation (mode: \(Self.describe(s.mode == .enforce ? s.version : nil)))")
            }
            var next = s
            next.confirmDeadline = nil
            next.confirmWindow = nil
            next.confirmedVersion = version
            // The same rules without the kernel's confirmation switch, in one transaction.
            let prepared: Prepared
            do {
                prepared = try table(for: version)
                try backend.replace(prepared.table)
            } catch {
                if !Self.changedNothing(error) { rollBackSoon(&s, version: version) }
                record("confirm", operator: name, reason: "confirm ruleset version \(version)", ruleset: try? store.ruleset(version: version),
                       management: config.effectiveManagement(), outcome: "failed: \(error)")
                return ControlAnswer(ok: false, message: "confirmation failed (\(error)); the deadline still stands")
            }
            do {
                try persist(next, management: prepared.management)
            } catch {
                // The switch is gone from the kernel but the confirmation is not on disk: put the
                // switch back, so that a dead agent still cannot leave the rules unconfirmed.
                if let armed = try? table(for: version, openAfter: Self.armedTimeout(until: deadline, from: Date().timeIntervalSince1970),
                                          fallback: s.confirmedVersion) {
                    try? backend.replace(armed.table)
                }
                return ControlAnswer(ok: false, message: "could not persist the confirmation (\(error)); the deadline still stands")
            }
            s = next
            record("confirm", operator: name, reason: "confirm ruleset version \(version)", ruleset: prepared.ruleset,
                   management: prepared.management, outcome: "success")
            log("ruleset version \(version) confirmed by \(name)")
            return ControlAnswer(ok: true, message: "ruleset version \(version) confirmed: it stays in force")
        }
    }

    func discover(operator name: String, reason: String) -> ControlAnswer {
        inner.withLock { inner in
            guard !inner.stopped else { return ControlAnswer(ok: false, message: "the agent is stopping; nothing changed") }
            let management = config.effectiveManagement()
            do {
                try backend.replace(CordonTables.discovery())
            } catch {
                record("discover", operator: name, reason: reason, ruleset: nil, management: management, outcome: "failed: \(error)")
                return ControlAnswer(ok: false, message: "return to discovery failed: \(error)")
            }
            // The kernel is in discovery whatever happens next; the state says so.
            inner.state = EnforcementState()
            do {
                try persist(inner.state, management: management)
            } catch {
                record("discover", operator: name, reason: reason, ruleset: nil, management: management,
                       outcome: "failed: discovery is in the kernel but could not be persisted (\(error))")
                return ControlAnswer(ok: false, message: """
                    discovery is in the kernel, but the mode could not be saved (\(error)): \
                    a restart of the agent would re-apply the previous mode
                    """)
            }
            record("discover", operator: name, reason: reason, ruleset: nil, management: management, outcome: "success")
            log("back to discovery for \(name)")
            return ControlAnswer(ok: true, message: "discovery: nothing is blocked, flows are recorded")
        }
    }

    /// Called by the main loop a few times a second: the deadline needs no operator and no network.
    func tick() {
        inner.withLock { inner in
            guard !inner.stopped, inner.state.mode == .enforce, let deadline = inner.state.confirmDeadline,
                  TimeText.now() >= deadline else { return }
            do {
                let window = inner.state.confirmWindow ?? 0
                try rollBack(&inner.state, reason: window > 0 ? "not confirmed within \(window) s" : "after a failed or unknown transition")
            } catch {
                // Keep trying at every tick rather than leave unconfirmed rules in force silently.
                log("ROLLBACK FAILED, retrying: \(error)")
            }
        }
    }

    /// Back to the last confirmed state: discovery, or the ruleset an operator confirmed before.
    private func rollBack(_ s: inout EnforcementState, reason: String) throws {
        let target = s.confirmedVersion
        let management = config.effectiveManagement()
        let prepared: Prepared
        do {
            prepared = try table(for: target)
            try backend.replace(prepared.table)
        } catch {
            record("rollback", operator: Self.agentOperator, reason: reason, ruleset: nil, management: management, outcome: "failed: \(error)")
            throw error
        }
        var next = EnforcementState()
        if let target {
            next.mode = .enforce
            next.version = target
            next.confirmedVersion = target
        }
        s = next
        do {
            try persist(next, management: prepared.management)
        } catch {
            // The kernel is back; a restart would re-apply the old state and roll back again.
            log("rolled back, but could not persist it: \(error)")
        }
        record("rollback", operator: Self.agentOperator, reason: reason, ruleset: prepared.ruleset, management: prepared.management,
               outcome: "success: back to \(Self.describe(target))")
        log("rolled back to \(Self.describe(target)): \(reason)")
    }
}

/// The management channel's health: a TCP connect to every collector, through whatever rules
/// are in force. Connect-only: it proves the path, and needs nothing from the collector's protocol.
enum ManagementProbe {
    /// The failures, one text per collector that did not accept a connection in time.
    /// All at once, so that several unreachable collectors cost one timeout, not one each.
    static func check(_ collectors: [ManagementChannel.Endpoint], timeoutSeconds: Double = 2) -> [String] {
        let results = Mutex([String?](repeating: nil, count: collectors.count))
        DispatchQueue.concurrentPerform(iterations: collectors.count) { index in
            let endpoint = collectors[index]
            let failure = connect(endpoint, timeoutSeconds: timeoutSeconds).map { "collector \(endpoint.hostPort) unreachable (\($0))" }
            results.withLock { $0[index] = failure }
        }
        return results.withLock { $0.compactMap { $0 } }
    }

    /// nil on success, else why.
    static func connect(_ endpoint: ManagementChannel.Endpoint, timeoutSeconds: Double) -> String? {
        let address = endpoint.addresses.address
        let family = address.family == .ipv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        var storage = sockaddr_storage()
        let length: socklen_t
        let bytes = address.bytes
        if address.family == .ipv4 {
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = (endpoint.port ?? 0).bigEndian
            withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: withUnsafeBytes(of: v4) { Array($0) }) }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = (endpoint.port ?? 0).bigEndian
            withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: withUnsafeBytes(of: v6) { Array($0) }) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        let started = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        if started == 0 { return nil }
        guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, Int32(timeoutSeconds * 1000))
        if ready == 0 { return "no answer within \(timeoutSeconds) s" }
        if ready < 0 { return "poll: \(String(cString: strerror(errno)))" }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        return error == 0 ? nil : String(cString: strerror(error))
    }
}
