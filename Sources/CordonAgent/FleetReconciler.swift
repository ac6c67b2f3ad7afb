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
        /// These steps, in order: whatever tightens first, a release last.
        case apply([Step])
        /// A part of the document this agent cannot carry out, with nothing else to do; the
        /// generation fails with this.
        case refuse(String)
    }

    /// One thing the channel carries out for a document.
    public enum Step: Equatable, Sendable {
        /// An engine request, through the runner.
        case request(Engine.Request)
        /// The server's policy: kept as a local approved version (the server's approval
        /// recorded in the decision log), then enforced through the confirm window. Confirmed by
        /// the agent itself only after an authenticated round trip to the server through the new
        /// rules; otherwise the window runs out and the host rolls back by itself.
        case enforce(EffectivePolicy, confirmWithin: Int64, operator: String, reason: String)
        /// The policy is in force but unconfirmed (the agent restarted inside the window): the
        /// round trip, then the confirmation.
        case confirm(operator: String)
        /// The mode part of a document that also changes the isolation could not be carried
        /// out: the isolation is applied all the same (an isolation never waits on a policy),
        /// then the generation fails with this.
        case fail(String)
    }

    /// Who the decision log names for a server's request.
    public static func operatorName(_ requestedBy: String) -> String { "cordon-server: \(requestedBy)" }
    public static let via = "from cordon-server"

    /// `inForceDigest`: the digest of the ruleset version in the kernel (nil in discovery).
    /// `modeDone`: the mode intent this agent carried out already. A document that brings it
    /// again (a later isolation's generation) does not apply it again: a local override since
    /// (`--override-server`) stands until the server decides the mode anew, and shows as drift.
    public static func plan(_ document: DesiredState, host: HostState, inForceDigest: String? = nil, modeDone: String? = nil) -> Plan {
        var steps: [Step] = []
        var release: Step?
        let isolation = document.isolation
        if isolation.origin == .server {
            let name = operatorName(isolation.requestedBy)
            let reason = isolation.reason + (isolation.intentID.map { " (intent \($0))" } ?? "")
            switch (isolation.state, host.isolation.isolated) {
            // A host whose release is being checked has its isolation table out already: an
            // isolation asked for now must be put in again, not taken as there.
            case (.isolated, _) where !isolatedNow(host): steps.append(.request(Engine.Request(.isolate(reason: reason, via: via), operator: name)))
            case (.released, true): release = .request(Engine.Request(.release(reason: reason), operator: name))
            default: break
            }
        }
        switch modeSteps(document, host: host, inForceDigest: inForceDigest, modeDone: modeDone) {
        case .failure(let refusal):
            if let release { steps.append(release) }
            return steps.isEmpty ? .refuse(refusal.why) : .apply(steps + [.fail(refusal.why)])
        case .success(let more): steps += more
        }
        if let release { steps.append(release) }
        if steps.isEmpty { return isolation.origin == .server ? .inSync : .echo }
        return .apply(steps)
    }

    struct Refusal: Error { var why: String }

    /// What the document's mode and policy ask of the host. No mode: the server leaves the mode
    /// to the host (no rollout reached it), whatever policy is assigned meanwhile.
    static func modeSteps(_ document: DesiredState, host: HostState, inForceDigest: String?, modeDone: String?) -> Result<[Step], Refusal> {
        guard let mode = document.mode else { return .success([]) }
        if let id = mode.intentID, id == modeDone { return .success([]) }
        let name = operatorName(mode.intentID.map { "intent \($0)" } ?? "rollout")
        let e = host.enforcement
        switch mode.mode {
        case .discovery:
            guard e.mode != .discovery else { return .success([]) }
            return .success([.request(Engine.Request(.discover(reason: "the server's document: discovery" + (mode.intentID.map { " (intent \($0))" } ?? "")),
                                                     operator: name))])
        case .enforce:
            guard let policy = document.policy else { return .failure(Refusal(why: "the document asks for enforce without a policy")) }
            guard Engine.confirmRange.contains(mode.confirmWithin) else {
                return .failure(Refusal(why: "confirm_within must be \(Engine.confirmRange.lowerBound) to \(Engine.confirmRange.upperBound) seconds"))
            }
            guard e.mode == .enforce, inForceDigest == policy.digest else {
                return .success([.enforce(policy, confirmWithin: mode.confirmWithin, operator: name,
                                          reason: "the server's effective policy \(policy.digest.prefix(12))" + (mode.intentID.map { " (intent \($0))" } ?? ""))])
            }
            // In force, and awaiting its confirmation: the round trip decides.
            if e.unconfirmed && !e.checking { return .success([.confirm(operator: name)]) }
            return .success([])
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
    public static func satisfied(_ document: DesiredState, host: HostState, inForceDigest: String? = nil, modeDone: String? = nil) -> Bool {
        // Mid-release the outcome is not known yet: nothing counts as done.
        guard host.isolation.releasing == nil else { return false }
        switch plan(document, host: host, inForceDigest: inForceDigest, modeDone: modeDone) {
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
