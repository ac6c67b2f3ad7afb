import CordonCore
import CordonWire

/// What the agent does with the server's document, decided without a kernel, a database or a
/// network: the document and the host's state in, the engine's requests out. `FleetLink` (the
/// channel) carries the plan out through the runner, the same path as every other transition,
/// and reports what came of it.
public enum FleetReconciler {
    public enum Plan: Equatable, Sendable {
        /// The host is as the document says: the generation is applied with nothing to do.
        case inSync
        /// The document holds the host's own local change, adopted by the server: already in
        /// force here, and applying it could undo a later local change.
        case echo
        /// These requests, in order: whatever tightens first, a release last.
        case apply([Engine.Request])
        /// A part of the document this agent cannot carry out; the generation fails with this.
        case refuse(String)
    }

    /// Who the decision log names for a server's request.
    public static func operatorName(_ requestedBy: String) -> String { "cordon-server: \(requestedBy)" }
    public static let via = "from cordon-server"

    public static func plan(_ document: DesiredState, host: HostState) -> Plan {
        // Mode and policy come with the server's rollouts; until this agent applies them, a
        // document that asks for them fails loudly instead of being taken as done.
        if document.mode != nil || document.policy != nil {
            return .refuse("this agent (\(CordonVersion.current)) cannot apply a mode or policy from the server yet")
        }
        let isolation = document.isolation
        guard isolation.origin == .server else { return .echo }
        let name = operatorName(isolation.requestedBy)
        let reason = isolation.reason + (isolation.intentID.map { " (intent \($0))" } ?? "")
        switch (isolation.state, host.isolation.isolated) {
        // A host whose release is being checked has its isolation table out already: an
        // isolation asked for now must be put in again, not taken as there.
        case (.isolated, _) where !isolatedNow(host): return .apply([Engine.Request(.isolate(reason: reason, via: via), operator: name)])
        case (.released, true): return .apply([Engine.Request(.release(reason: reason), operator: name)])
        default: return .inSync
        }
    }

    /// The isolation table is in the kernel: isolated, and no release is being checked.
    public static func isolatedNow(_ host: HostState) -> Bool { host.isolation.isolated && host.isolation.releasing == nil }

    /// The request that installs the management channel again after the server's extra
    /// whitelist changed, where the channel is in the kernel (isolated or enforcing); nil where it
    /// is not (the next isolate or enforce installs it).
    public static func reinstall(host: HostState) -> Engine.Request? {
        guard host.isolation.isolated || host.enforcement.mode == .enforce else { return nil }
        return Engine.Request(.tampered("the management channel changed: the server's extra whitelist"))
    }

    /// The entries of a document's extra whitelist this agent can use, and the others with why.
    public static func whitelist(_ entries: [String]) -> (endpoints: [ManagementChannel.Endpoint], invalid: [String]) {
        var endpoints: [ManagementChannel.Endpoint] = [], invalid: [String] = []
        for entry in entries {
            do { endpoints.append(try ManagementChannel.extra(entry)) } catch { invalid.append("\(error)") }
        }
        return (endpoints, invalid)
    }

    /// Whether the document asks nothing of the host as it is, so that its generation counts as
    /// applied without an apply (a report's answer that adopted a local change).
    public static func satisfied(_ document: DesiredState, host: HostState) -> Bool {
        // Mid-release the outcome is not known yet: nothing counts as done.
        guard host.isolation.releasing == nil else { return false }
        switch plan(document, host: host) {
        case .inSync: return true
        case .echo: return document.isolation.state == (host.isolation.isolated ? .isolated : .released)
        case .apply, .refuse: return false
        }
    }

    /// An isolation or release made on the host itself that the server has not been told of.
    /// `known`: the isolation the server knows of (nil before the first report: released).
    /// `settled`: no apply of the server's ran since `host` was read, so a difference is the
    /// host's own doing, not the server's half-applied request. A release being checked is not
    /// settled either.
    public static func localChange(host: HostState, known: IsolationWord?, settled: Bool, sequence: Int64?, now: Int64) -> LocalIsolationChange? {
        let observed: IsolationWord = host.isolation.isolated ? .isolated : .released
        guard settled, host.isolation.releasing == nil, (known ?? .released) != observed else { return nil }
        return LocalIsolationChange(state: observed, operator: host.isolation.operator ?? "local", reason: host.isolation.reason ?? "",
                                    at: host.isolation.since ?? now, sequence: sequence)
    }
}
