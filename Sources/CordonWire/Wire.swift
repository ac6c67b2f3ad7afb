import CordonCore
import Foundation

/// The messages of the fleet: what an agent and `cordon-server` say to each other, and what the
/// API answers. Every key is snake_case, written out by each type, so that both ends, the OpenAPI
/// document and a SOAR playbook read the same names.
public enum Wire {
    /// Dates as RFC 3339 text, like every JSON of the CLI.
    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    public static func encode(_ value: some Encodable) -> Data { (try? encoder.encode(value)) ?? Data("{}".utf8) }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T { try JSONDecoder().decode(type, from: data) }

    /// A decoding failure as the field it is about, for a 400/422 that names it.
    public static func describe(_ error: any Error) -> (field: String?, message: String) {
        func path(_ keys: [any CodingKey]) -> String? {
            let parts = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return parts.isEmpty ? nil : parts.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        guard let error = error as? DecodingError else { return (nil, "the body is not valid JSON") }
        switch error {
        case .keyNotFound(let key, let context):
            return (path(context.codingPath + [key]), "is required")
        case .typeMismatch(let type, let context):
            return (path(context.codingPath), "expected \(Self.typeName(type))")
        case .valueNotFound(let type, let context):
            return (path(context.codingPath), "expected \(Self.typeName(type)), not null")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return (field, field == nil ? "the body is not valid JSON" : context.debugDescription)
        @unknown default:
            return (nil, "the body could not be read")
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type: return "an integer"
        case is Bool.Type: return "true or false"
        case is [String: String].Type: return "an object of strings"
        default: return type == Array<Any>.self ? "an array" : "a value of another type"
        }
    }
}

/// The two isolation states a request can ask for.
public enum IsolationWord: String, Codable, Sendable, CaseIterable {
    case isolated, released
}

/// An error body: what is wrong and, for bad input, which field. `code` names a condition a
/// program acts on (`host_revoked`), so that no client has to match the message's words.
public struct WireError: Codable, Sendable, Error, CustomStringConvertible {
    public var error: String
    public var field: String?
    public var code: Code?

    public enum Code: String, Codable, Sendable {
        /// The host's credential was revoked: retrying cannot help.
        case hostRevoked = "host_revoked"
    }

    public init(_ error: String, field: String? = nil, code: Code? = nil) {
        self.error = error
        self.field = field
        self.code = code
    }
    public var description: String { field.map { "\($0): \(error)" } ?? error }
}

// MARK: Agent ↔ server

/// `POST /agent/v1/enroll`: the enrollment secret and the facts of the host.
public struct EnrollRequest: Codable, Sendable {
    public var secret: String
    public var hostname: String
    public var machineID: String
    public var addresses: [String]
    public var agentVersion: String
    public var tags: [String: String]

    enum CodingKeys: String, CodingKey {
        case secret, hostname, machineID = "machine_id", addresses, agentVersion = "agent_version", tags
    }

    public init(secret: String, hostname: String, machineID: String, addresses: [String], agentVersion: String, tags: [String: String]) {
        self.secret = secret
        self.hostname = hostname
        self.machineID = machineID
        self.addresses = addresses
        self.agentVersion = agentVersion
        self.tags = tags
    }
}

/// The host's own credential: a bearer key only this host holds (the server keeps its hash).
public struct EnrollResponse: Codable, Sendable {
    public var hostID: String
    public var credential: String
    enum CodingKeys: String, CodingKey { case hostID = "host_id", credential }
    public init(hostID: String, credential: String) {
        self.hostID = hostID
        self.credential = credential
    }
}

/// The isolation alone, as servers and agents before 0.3.0 exchange it (`DesiredState.legacy`):
/// a local change is marked by `requested_by` starting with `local: `.
public struct DesiredIsolation: Codable, Sendable, Equatable {
    public var generation: Int64
    public var state: IsolationWord
    /// The intent that set it; nil for the initial state and for a cancel's return.
    public var intentID: String?
    public var reason: String
    public var requestedBy: String

    enum CodingKeys: String, CodingKey {
        case generation, state, intentID = "intent_id", reason, requestedBy = "requested_by"
    }

    public init(generation: Int64, state: IsolationWord, intentID: String?, reason: String, requestedBy: String) {
        self.generation = generation
        self.state = state
        self.intentID = intentID
        self.reason = reason
        self.requestedBy = requestedBy
    }
}

/// The agent's state as it reports it: what the API shows of the host.
public struct AgentStatus: Codable, Sendable, Equatable {
    public var mode: String
    public var isolated: Bool
    public var rulesetVersion: Int64?
    public var rulesetDigest: String?
    public var lostEvents: UInt64
    public var guardRestores: UInt64
    public var guardEscalations: UInt64
    public var flows: Int
    public var agentVersion: String
    public var addresses: [String]
    /// The management channel in force (collectors, the server, resolvers, the extra
    /// whitelist): what enforcement always allows, so a server-side review counts it as allowed.
    /// Absent from agents before 0.3.0.
    public var management: [ManagementChannel.WhitelistEntry]?
    /// When the guard last restored Cordon's tables, and how many times in the last ten minutes
    /// (`GuardHint.window`). Absent from agents before 0.3.0.
    public var lastGuardRestore: String? = nil
    public var recentGuardRestores: Int? = nil

    enum CodingKeys: String, CodingKey {
        case mode, isolated, rulesetVersion = "ruleset_version", rulesetDigest = "ruleset_digest", lostEvents = "lost_events"
        case guardRestores = "guard_restores", guardEscalations = "guard_escalations", flows, agentVersion = "agent_version", addresses, management
        case lastGuardRestore = "last_guard_restore", recentGuardRestores = "recent_guard_restores"
    }

    public init(mode: String, isolated: Bool, rulesetVersion: Int64?, rulesetDigest: String?, lostEvents: UInt64, guardRestores: UInt64,
                guardEscalations: UInt64, flows: Int, agentVersion: String, addresses: [String], management: [ManagementChannel.WhitelistEntry]? = nil) {
        self.mode = mode
        self.isolated = isolated
        self.rulesetVersion = rulesetVersion
        self.rulesetDigest = rulesetDigest
        self.lostEvents = lostEvents
        self.guardRestores = guardRestores
        self.guardEscalations = guardEscalations
        self.flows = flows
        self.agentVersion = agentVersion
        self.addresses = addresses
        self.management = management
    }
}

/// What a host's guard restores say about it: a restore now and then is someone's mistake; many
/// in a row are another firewall manager that reloads nftables (seed 000's Group Policy case),
/// which fights Cordon for as long as it runs.
public enum GuardHint {
    /// Seconds over which restores are counted.
    public static let window: Int64 = 600
    /// Restores within the window from which the host is said to be fought over.
    public static let repeated = 3

    public static func text(recent: Int?) -> String? {
        guard let recent, recent >= repeated else { return nil }
        return "the guard restored Cordon's tables \(recent) times in the last \(window / 60) minutes: another program keeps reloading nftables "
            + "(firewalld, a configuration-management run, `nft -f` or `iptables-restore` from a timer or hook). Make it leave the tables "
            + "`inet cordon*` alone (or not flush the ruleset), or stop it managing this host's firewall"
    }
}

/// What the agent did with a desired generation.
public struct AppliedGeneration: Codable, Sendable, Equatable {
    public var generation: Int64
    public var ok: Bool
    /// Why it failed (a release whose health check failed: the host was isolated again).
    public var error: String?
    /// A policy went into the kernel and was rolled back (its check failed, or its confirm
    /// window ran out): what halts a rollout at once. Absent from agents before 0.3.0.
    public var rolledBack: Bool?

    enum CodingKeys: String, CodingKey { case generation, ok, error, rolledBack = "rolled_back" }

    public init(generation: Int64, ok: Bool, error: String?, rolledBack: Bool? = nil) {
        self.generation = generation
        self.ok = ok
        self.error = error
        self.rolledBack = rolledBack
    }
}

/// An isolation or release done on the host itself (the CLI, the control socket) that the server
/// has not been told of: reported at the next contact, and it becomes the desired state.
public struct LocalIsolationChange: Codable, Sendable, Equatable {
    public var state: IsolationWord
    public var `operator`: String
    public var reason: String
    /// Unix seconds.
    public var at: Int64
    /// The decision-log sequence of the isolate or release that made it: the change's identity,
    /// so that a report sent again (its answer lost) is not taken for a second change. Absent
    /// from agents before 0.3.0.
    public var sequence: Int64?
    public init(state: IsolationWord, operator name: String, reason: String, at: Int64, sequence: Int64? = nil) {
        self.state = state
        self.operator = name
        self.reason = reason
        self.at = at
        self.sequence = sequence
    }
}

/// `POST /agent/v1/report`: status, the isolation observed, and what the server has not
/// acknowledged yet (decision-log entries after its last acknowledged sequence, changed flows).
/// Resending a report is harmless: entries are stored once by sequence, flows by key with their
/// totals.
public struct AgentReport: Codable, Sendable {
    public var status: AgentStatus
    /// The isolation in force now.
    public var observed: IsolationWord
    /// The highest generation the agent has applied.
    public var appliedGeneration: Int64
    public var applied: AppliedGeneration?
    public var local: LocalIsolationChange?
    public var log: [Decision]
    public var flows: [FlowRecord]
    /// Nothing was being applied or waiting to be while the report was made, so `observed` and
    /// `applied_generation` are of one moment: only such a report may re-base a server restored
    /// from an older backup on what the host runs. Absent from agents before 0.3.0.
    public var settled: Bool?
    /// The agent's own change sequence of its flow rows: `flows` are those changed after
    /// `flows_after`, up to `flows_through`. The server keeps the head it has stored and answers
    /// it, so a server restored from an older backup gets the rows it lost sent again. Absent
    /// from agents before 0.3.0.
    public var flowsAfter: Int64?
    public var flowsThrough: Int64?

    enum CodingKeys: String, CodingKey {
        case status, observed, appliedGeneration = "applied_generation", applied, local, log, flows, settled
        case flowsAfter = "flows_after", flowsThrough = "flows_through"
    }

    public init(status: AgentStatus, observed: IsolationWord, appliedGeneration: Int64, applied: AppliedGeneration?,
                local: LocalIsolationChange?, log: [Decision], flows: [FlowRecord], settled: Bool? = nil, flowsAfter: Int64? = nil,
                flowsThrough: Int64? = nil) {
        self.flowsAfter = flowsAfter
        self.flowsThrough = flowsThrough
        self.status = status
        self.observed = observed
        self.appliedGeneration = appliedGeneration
        self.applied = applied
        self.local = local
        self.log = log
        self.flows = flows
        self.settled = settled
    }
}

public struct ReportResponse: Codable, Sendable {
    /// Every entry up to this sequence is stored on the server.
    public var logAckedThrough: Int64
    /// The host's document after the report.
    public var state: DesiredState
    /// Flow rows the server refused (and did not store), by their index in the report; the rest were stored.
    public var refusedFlows: [RefusedFlow]
    /// The agent's flow sequence the server has stored every row up to (`AgentReport.flowsThrough`);
    /// null from servers before 0.3.0 and before the host's first report with it.
    public var flowsAckedThrough: Int64?
    enum CodingKeys: String, CodingKey {
        case logAckedThrough = "log_acked_through", state, desired, refusedFlows = "refused_flows", flowsAckedThrough = "flows_acked_through"
    }
    public init(logAckedThrough: Int64, state: DesiredState, refusedFlows: [RefusedFlow] = [], flowsAckedThrough: Int64? = nil) {
        self.logAckedThrough = logAckedThrough
        self.state = state
        self.refusedFlows = refusedFlows
        self.flowsAckedThrough = flowsAckedThrough
    }

    /// `desired` (the isolation alone) is written too, for agents before 0.3.0.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(logAckedThrough, forKey: .logAckedThrough)
        try c.encode(state, forKey: .state)
        try c.encode(state.legacy, forKey: .desired)
        try c.encode(refusedFlows, forKey: .refusedFlows)
        try c.encode(flowsAckedThrough, forKey: .flowsAckedThrough)
    }

    /// A server before 0.3.0 sends `desired` only, and no `refused_flows`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        logAckedThrough = try c.decode(Int64.self, forKey: .logAckedThrough)
        if let state = try c.decodeIfPresent(DesiredState.self, forKey: .state) {
            self.state = state
        } else {
            state = DesiredState(legacy: try c.decode(DesiredIsolation.self, forKey: .desired))
        }
        refusedFlows = try c.decodeIfPresent([RefusedFlow].self, forKey: .refusedFlows) ?? []
        flowsAckedThrough = try c.decodeIfPresent(Int64.self, forKey: .flowsAckedThrough)
    }
}

public struct RefusedFlow: Codable, Sendable, Equatable {
    public var index: Int
    /// The field within the row, e.g. `remote_address`.
    public var field: String
    public var message: String
    public init(index: Int, field: String, message: String) {
        self.index = index
        self.field = field
        self.message = message
    }
}
