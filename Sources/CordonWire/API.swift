import CordonCore
import Foundation

// The analysts' API (`/api/v1`), as `cordon fleet` and the console read it.

/// The roles of API tokens, each allowed what the one before it is and more.
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    case viewer, responder, approver, admin

    public static func < (a: Role, b: Role) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

public struct IsolationView: Codable, Sendable, Equatable {
    public var desired: IsolationWord
    /// What the agent last reported; nil before its first report.
    public var observed: IsolationWord?
    public var generation: Int64
    public var observedGeneration: Int64
    /// When the desired state was set and the agent has not applied it yet; nil otherwise.
    public var pendingSince: String?

    enum CodingKeys: String, CodingKey {
        case desired, observed, generation, observedGeneration = "observed_generation", pendingSince = "pending_since"
    }

    /// Nulls are written out: a reader can rely on every field being present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(desired, forKey: .desired)
        try c.encode(observed, forKey: .observed)
        try c.encode(generation, forKey: .generation)
        try c.encode(observedGeneration, forKey: .observedGeneration)
        try c.encode(pendingSince, forKey: .pendingSince)
    }

    public init(desired: IsolationWord, observed: IsolationWord?, generation: Int64, observedGeneration: Int64, pendingSince: String?) {
        self.desired = desired
        self.observed = observed
        self.generation = generation
        self.observedGeneration = observedGeneration
        self.pendingSince = pendingSince
    }
}

public struct RulesetInForce: Codable, Sendable, Equatable {
    public var version: Int64
    public var digest: String?
    public init(version: Int64, digest: String?) {
        self.version = version
        self.digest = digest
    }
}

public struct HostView: Codable, Sendable, Equatable {
    public var id: String
    public var hostname: String
    public var machineID: String
    public var tags: [String: String]
    /// Where each tag came from: `secret` (the enrollment secret's, chosen by an administrator),
    /// `host` (the agent's own claim) or `admin`. A selector should trust a host's claims only
    /// as far as anyone holding the secret can be trusted.
    public var tagSources: [String: String]
    /// Another enrolled host gave the same machine id: one of them may be an impostor.
    public var duplicateMachineID: Bool
    public var addresses: [String]
    public var agentVersion: String
    public var enrolledAt: String
    public var lastSeen: String?
    public var connected: Bool
    public var revoked: Bool
    /// discovery or enforce, as last reported; nil before the first report.
    public var mode: String?
    public var ruleset: RulesetInForce?
    public var lostEvents: UInt64
    public var guardRestores: UInt64
    public var guardEscalations: UInt64
    /// When the guard last put back Cordon's tables after another program changed them; null
    /// when it never did (or the agent is older than 0.3.0).
    public var lastGuardRestore: String? = nil
    /// Set when restores keep coming: the likely cause and what to change.
    public var guardHint: String? = nil
    /// Problems of the shipped decision log (a gap, a broken link); empty when it verifies.
    public var logProblems: Int
    public var isolation: IsolationView
    public var policy: HostPolicyView

    enum CodingKeys: String, CodingKey {
        case id, hostname, machineID = "machine_id", tags, tagSources = "tag_sources", duplicateMachineID = "duplicate_machine_id", addresses
        case agentVersion = "agent_version", enrolledAt = "enrolled_at"
        case lastSeen = "last_seen", connected, revoked, mode, ruleset, lostEvents = "lost_events", guardRestores = "guard_restores"
        case guardEscalations = "guard_escalations", logProblems = "log_problems", isolation, policy
        case lastGuardRestore = "last_guard_restore", guardHint = "guard_hint"
    }

    /// Nulls are written out: a reader can rely on every field being present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(hostname, forKey: .hostname)
        try c.encode(machineID, forKey: .machineID)
        try c.encode(tags, forKey: .tags)
        try c.encode(tagSources, forKey: .tagSources)
        try c.encode(duplicateMachineID, forKey: .duplicateMachineID)
        try c.encode(addresses, forKey: .addresses)
        try c.encode(agentVersion, forKey: .agentVersion)
        try c.encode(enrolledAt, forKey: .enrolledAt)
        try c.encode(lastSeen, forKey: .lastSeen)
        try c.encode(connected, forKey: .connected)
        try c.encode(revoked, forKey: .revoked)
        try c.encode(mode, forKey: .mode)
        try c.encode(ruleset, forKey: .ruleset)
        try c.encode(lostEvents, forKey: .lostEvents)
        try c.encode(guardRestores, forKey: .guardRestores)
        try c.encode(guardEscalations, forKey: .guardEscalations)
        try c.encode(lastGuardRestore, forKey: .lastGuardRestore)
        try c.encode(guardHint, forKey: .guardHint)
        try c.encode(logProblems, forKey: .logProblems)
        try c.encode(isolation, forKey: .isolation)
        try c.encode(policy, forKey: .policy)
    }

    /// A server before 0.3.0 sends neither `tag_sources` nor `duplicate_machine_id`, nor `policy`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        hostname = try c.decode(String.self, forKey: .hostname)
        machineID = try c.decode(String.self, forKey: .machineID)
        tags = try c.decode([String: String].self, forKey: .tags)
        tagSources = try c.decodeIfPresent([String: String].self, forKey: .tagSources) ?? [:]
        duplicateMachineID = try c.decodeIfPresent(Bool.self, forKey: .duplicateMachineID) ?? false
        addresses = try c.decode([String].self, forKey: .addresses)
        agentVersion = try c.decode(String.self, forKey: .agentVersion)
        enrolledAt = try c.decode(String.self, forKey: .enrolledAt)
        lastSeen = try c.decodeIfPresent(String.self, forKey: .lastSeen)
        connected = try c.decode(Bool.self, forKey: .connected)
        revoked = try c.decode(Bool.self, forKey: .revoked)
        mode = try c.decodeIfPresent(String.self, forKey: .mode)
        ruleset = try c.decodeIfPresent(RulesetInForce.self, forKey: .ruleset)
        lostEvents = try c.decode(UInt64.self, forKey: .lostEvents)
        guardRestores = try c.decode(UInt64.self, forKey: .guardRestores)
        guardEscalations = try c.decode(UInt64.self, forKey: .guardEscalations)
        lastGuardRestore = try c.decodeIfPresent(String.self, forKey: .lastGuardRestore)
        guardHint = try c.decodeIfPresent(String.self, forKey: .guardHint)
        logProblems = try c.decode(Int.self, forKey: .logProblems)
        isolation = try c.decode(IsolationView.self, forKey: .isolation)
        policy = try c.decodeIfPresent(HostPolicyView.self, forKey: .policy)
            ?? HostPolicyView(assigned: nil, desiredDigest: nil, inForceDigest: nil, sync: connected ? "in_sync" : "offline")
    }

    public init(id: String, hostname: String, machineID: String, tags: [String: String], tagSources: [String: String] = [:],
                duplicateMachineID: Bool = false, addresses: [String], agentVersion: String,
                enrolledAt: String, lastSeen: String?, connected: Bool, revoked: Bool, mode: String?, ruleset: RulesetInForce?,
                lostEvents: UInt64, guardRestores: UInt64, guardEscalations: UInt64, logProblems: Int, isolation: IsolationView,
                policy: HostPolicyView? = nil) {
        self.id = id
        self.hostname = hostname
        self.machineID = machineID
        self.tags = tags
        self.tagSources = tagSources
        self.duplicateMachineID = duplicateMachineID
        self.addresses = addresses
        self.agentVersion = agentVersion
        self.enrolledAt = enrolledAt
        self.lastSeen = lastSeen
        self.connected = connected
        self.revoked = revoked
        self.mode = mode
        self.ruleset = ruleset
        self.lostEvents = lostEvents
        self.guardRestores = guardRestores
        self.guardEscalations = guardEscalations
        self.logProblems = logProblems
        self.isolation = isolation
        self.policy = policy ?? HostPolicyView(assigned: nil, desiredDigest: nil, inForceDigest: nil, sync: connected ? "in_sync" : "offline")
    }
}

/// `POST /api/v1/hosts/{id}/isolation`.
public struct IsolationRequest: Codable, Sendable {
    public var state: IsolationWord
    public var reason: String
    public var externalID: String?
    enum CodingKeys: String, CodingKey { case state, reason, externalID = "external_id" }
    public init(state: IsolationWord, reason: String, externalID: String? = nil) {
        self.state = state
        self.reason = reason
        self.externalID = externalID
    }
}

public enum IntentStatus: String, Codable, Sendable, CaseIterable {
    case pending, succeeded, failed, superseded
}

public struct IntentAccepted: Codable, Sendable, Equatable {
    public var intentID: String
    public var generation: Int64
    public var status: IntentStatus
    enum CodingKeys: String, CodingKey { case intentID = "intent_id", generation, status }
    public init(intentID: String, generation: Int64, status: IntentStatus) {
        self.intentID = intentID
        self.generation = generation
        self.status = status
    }
}

/// What an intent changes in the host's document.
public enum IntentKind: String, Codable, Sendable, CaseIterable {
    /// `state` is `isolated` or `released`.
    case isolation
    /// `state` is `discovery` or `enforce` (a rollout's step).
    case mode
}

public struct IntentView: Codable, Sendable, Equatable {
    public var id: String
    public var hostID: String
    public var kind: IntentKind
    /// `local`: a change made on the host itself and adopted by the server (`requested_by` is
    /// then the host's operator).
    public var origin: DesiredState.Origin
    /// A word of `kind`: isolated or released, discovery or enforce.
    public var state: String
    public var generation: Int64
    public var status: IntentStatus
    public var requestedBy: String
    public var requestedAt: String
    public var completedAt: String?
    public var reason: String
    public var externalID: String?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case id, hostID = "host_id", kind, origin, state, generation, status, requestedBy = "requested_by", requestedAt = "requested_at"
        case completedAt = "completed_at", reason, externalID = "external_id", error
    }

    /// Nulls are written out: a reader can rely on every field being present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(hostID, forKey: .hostID)
        try c.encode(kind, forKey: .kind)
        try c.encode(origin, forKey: .origin)
        try c.encode(state, forKey: .state)
        try c.encode(generation, forKey: .generation)
        try c.encode(status, forKey: .status)
        try c.encode(requestedBy, forKey: .requestedBy)
        try c.encode(requestedAt, forKey: .requestedAt)
        try c.encode(completedAt, forKey: .completedAt)
        try c.encode(reason, forKey: .reason)
        try c.encode(externalID, forKey: .externalID)
        try c.encode(error, forKey: .error)
    }

    /// A server before 0.3.0 sends neither `kind` nor `origin`: its intents are isolations, and a
    /// local one is known by its `requested_by` (`local: NAME`), the only place it said so.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        hostID = try c.decode(String.self, forKey: .hostID)
        kind = try c.decodeIfPresent(IntentKind.self, forKey: .kind) ?? .isolation
        state = try c.decode(String.self, forKey: .state)
        generation = try c.decode(Int64.self, forKey: .generation)
        status = try c.decode(IntentStatus.self, forKey: .status)
        var by = try c.decode(String.self, forKey: .requestedBy)
        if let origin = try c.decodeIfPresent(DesiredState.Origin.self, forKey: .origin) {
            self.origin = origin
        } else if by.hasPrefix("local: ") {
            origin = .local
            by.removeFirst("local: ".count)
        } else {
            origin = .server
        }
        requestedBy = by
        requestedAt = try c.decode(String.self, forKey: .requestedAt)
        completedAt = try c.decodeIfPresent(String.self, forKey: .completedAt)
        reason = try c.decode(String.self, forKey: .reason)
        externalID = try c.decodeIfPresent(String.self, forKey: .externalID)
        error = try c.decodeIfPresent(String.self, forKey: .error)
    }

    public init(id: String, hostID: String, kind: IntentKind = .isolation, origin: DesiredState.Origin = .server, state: String, generation: Int64,
                status: IntentStatus, requestedBy: String, requestedAt: String, completedAt: String?, reason: String, externalID: String?, error: String?) {
        self.id = id
        self.hostID = hostID
        self.kind = kind
        self.origin = origin
        self.state = state
        self.generation = generation
        self.status = status
        self.requestedBy = requestedBy
        self.requestedAt = requestedAt
        self.completedAt = completedAt
        self.reason = reason
        self.externalID = externalID
        self.error = error
    }

    /// Who asked, as an analyst reads it: a local change says it was made on the host.
    public var requester: String { origin == .local ? "\(requestedBy) (on the host)" : requestedBy }
}

/// `GET /api/v1/hosts/{id}/log`: the shipped entries and the server's check of their chain.
public struct HostLog: Codable, Sendable {
    public struct Verification: Codable, Sendable, Equatable {
        public var intact: Bool
        public var entries: Int
        public var problems: [String]
        public init(intact: Bool, entries: Int, problems: [String]) {
            self.intact = intact
            self.entries = entries
            self.problems = problems
        }
    }
    public var hostID: String
    public var verification: Verification
    public var entries: [Decision]
    enum CodingKeys: String, CodingKey { case hostID = "host_id", verification, entries }
    public init(hostID: String, verification: Verification, entries: [Decision]) {
        self.hostID = hostID
        self.verification = verification
        self.entries = entries
    }
}

/// A list with its items under one key, so that fields can be added later.
public struct Page<Item: Codable & Sendable>: Codable, Sendable {
    public var items: [Item]
    /// How many there are in all, past this page (null where not counted).
    public var total: Int?
    public init(items: [Item], total: Int? = nil) {
        self.items = items
        self.total = total
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(items, forKey: .items)
        try c.encode(total, forKey: .total)
    }
}

/// `PATCH /api/v1/hosts/{id}/tags`: an administrator's tags, which win over the secret's and the
/// host's own, and the keys to take away whatever set them.
public struct TagChange: Codable, Sendable, Equatable {
    public var set: [String: String]
    public var unset: [String]
    public init(set: [String: String] = [:], unset: [String] = []) {
        self.set = set
        self.unset = unset
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Either may be left out; neither may be null.
        set = c.contains(.set) ? try c.decode([String: String].self, forKey: .set) : [:]
        unset = c.contains(.unset) ? try c.decode([String].self, forKey: .unset) : []
    }
}

/// `GET /api/v1/selectors/preview?selector=…`: what a selector picks now.
public struct SelectorPreview: Codable, Sendable, Equatable {
    /// The selector as the server reads it (canonical text).
    public var selector: String
    public var matches: Int
    /// The first hosts it matches, by name (at most `SelectorPreview.shown`).
    public var hosts: [HostName]
    public static let shown = 100

    public struct HostName: Codable, Sendable, Equatable {
        public var id: String
        public var hostname: String
        public init(id: String, hostname: String) {
            self.id = id
            self.hostname = hostname
        }
    }

    public init(selector: String, matches: Int, hosts: [HostName]) {
        self.selector = selector
        self.matches = matches
        self.hosts = hosts
    }
}

/// `GET /readyz`: whether this replica can do its work now. Each problem is null when there is none.
public struct Readiness: Codable, Sendable, Equatable {
    public var ready: Bool
    public var database: String?
    public var notifications: String?

    public init(database: String?, notifications: String?) {
        self.database = database
        self.notifications = notifications
        ready = database == nil && notifications == nil
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ready, forKey: .ready)
        try c.encode(database, forKey: .database)
        try c.encode(notifications, forKey: .notifications)
    }
}

/// `POST /api/v1/session`: the console's sign-in, an API token in the body (never in a URL).
public struct SignIn: Codable, Sendable {
    public var token: String
    public init(token: String) { self.token = token }
}

/// A console session as the page sees it: who, what they may do, and the CSRF token its
/// state-changing requests must carry. The cookie itself is HttpOnly and never in a body.
public struct ConsoleSessionView: Codable, Sendable, Equatable {
    public var name: String
    public var role: Role
    public var csrfToken: String
    public var expiresAt: String
    enum CodingKeys: String, CodingKey { case name, role, csrfToken = "csrf_token", expiresAt = "expires_at" }
    public init(name: String, role: Role, csrfToken: String, expiresAt: String) {
        self.name = name
        self.role = role
        self.csrfToken = csrfToken
        self.expiresAt = expiresAt
    }
}

/// `GET /api/v1/map`: the dependency map, folded to a drawable size and laid out by the server.
public struct MapView: Codable, Sendable {
    public struct Node: Codable, Sendable, Equatable {
        public var id: String
        /// group, host, network, name, somewhere or other (folded nodes, listed in `members`).
        public var kind: String
        public var label: String
        public var hosts: Int
        public var connections: UInt64
        public var members: [String]
        public var x: Double
        public var y: Double
        public init(id: String, kind: String, label: String, hosts: Int, connections: UInt64, members: [String], x: Double, y: Double) {
            self.id = id
            self.kind = kind
            self.label = label
            self.hosts = hosts
            self.connections = connections
            self.members = members
            self.x = x
            self.y = y
        }
    }

    public struct Edge: Codable, Sendable, Equatable {
        /// What `GET /api/v1/map/flows?edge=` takes.
        public var id: String
        public var from: String
        public var to: String
        public var service: String
        /// discovered, allowed, pending or rejected.
        public var state: String
        public var connections: UInt64
        public var flows: Int
        /// The ends' labels, in the edge table only (`GET /api/v1/map/edges`): its edges' nodes may not be drawn.
        public var fromLabel: String?
        public var toLabel: String?
        enum CodingKeys: String, CodingKey { case id, from, to, service, state, connections, flows, fromLabel = "from_label", toLabel = "to_label" }
        public init(id: String, from: String, to: String, service: String, state: String, connections: UInt64, flows: Int) {
            self.id = id
            self.from = from
            self.to = to
            self.service = service
            self.state = state
            self.connections = connections
            self.flows = flows
        }
    }

    public var window: String
    public var since: String
    /// The tag key hosts are grouped by; null: each host its own node.
    public var groupBy: String?
    public var hosts: Int
    public var flows: Int
    public var hiddenEdges: Int
    public var hiddenConnections: UInt64
    public var nodes: [Node]
    public var edges: [Edge]
    enum CodingKeys: String, CodingKey {
        case window, since, groupBy = "group_by", hosts, flows, hiddenEdges = "hidden_edges", hiddenConnections = "hidden_connections", nodes, edges
    }
    public init(window: String, since: String, groupBy: String?, hosts: Int, flows: Int, hiddenEdges: Int, hiddenConnections: UInt64,
                nodes: [Node], edges: [Edge]) {
        self.window = window
        self.since = since
        self.groupBy = groupBy
        self.hosts = hosts
        self.flows = flows
        self.hiddenEdges = hiddenEdges
        self.hiddenConnections = hiddenConnections
        self.nodes = nodes
        self.edges = edges
    }
}

/// One flow behind a map edge: which host reported it, and the flow as `hosts/{id}/flows` shows it.
public struct MapFlow: Codable, Sendable {
    public var hostID: String
    public var hostname: String
    public var flow: FlowRecord
    enum CodingKeys: String, CodingKey { case hostID = "host_id", hostname, flow }
    public init(hostID: String, hostname: String, flow: FlowRecord) {
        self.hostID = hostID
        self.hostname = hostname
        self.flow = flow
    }
}
