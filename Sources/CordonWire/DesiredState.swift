import CordonCore
import Foundation

/// Everything the server wants of one host, as one document under one generation that only
/// grows (as a control plane sends each node its whole map, not a stream of commands). The agent
/// reconciles its host to the newest document it has; an older one is never applied after a
/// newer, and a change to any part is a new generation, so "the latest intent wins" holds for
/// isolation, mode and policy alike.
public struct DesiredState: Codable, Sendable, Equatable {
    public var generation: Int64
    public var isolation: Isolation
    /// The mode the server wants; nil while the server leaves the mode to the host (no rollout
    /// has reached it yet), so a server without policy never switches a host to discovery.
    public var mode: ModeIntent?
    /// The effective policy for the host; nil while no assignment matches it.
    public var policy: EffectivePolicy?

    public init(generation: Int64, isolation: Isolation, mode: ModeIntent? = nil, policy: EffectivePolicy? = nil) {
        self.generation = generation
        self.isolation = isolation
        self.mode = mode
        self.policy = policy
    }

    /// A host nobody has asked anything of.
    public static let initial = DesiredState(generation: 0, isolation: Isolation(state: .released, origin: .server, intentID: nil, reason: "",
                                                                                   requestedBy: ""))

    enum CodingKeys: String, CodingKey { case generation, isolation, mode, policy }

    /// Nulls are written out: a reader can rely on every field being present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(generation, forKey: .generation)
        try c.encode(isolation, forKey: .isolation)
        try c.encode(mode, forKey: .mode)
        try c.encode(policy, forKey: .policy)
    }

    /// Who made the isolation the document holds.
    public enum Origin: String, Codable, Sendable {
        /// An analyst's intent through the API: the agent applies it.
        case server
        /// The host's own change (its CLI or control socket), adopted by the server: already in
        /// force there, and applying it again could undo a later local change.
        case local
    }

    public struct Isolation: Codable, Sendable, Equatable {
        public var state: IsolationWord
        public var origin: Origin
        /// The intent that set it; nil for the initial state and for a cancel's return.
        public var intentID: String?
        public var reason: String
        public var requestedBy: String
        /// Seed 000's `extra_whitelist`: the site's own dependencies (Kerberos, LDAP, an internal
        /// resolver) that stay open while the host is isolated, in the agent's `--extra-allow`
        /// syntax (`tcp/198.51.100.5:88`), which both ends validate with the same parser.
        public var extraWhitelist: [String]

        public init(state: IsolationWord, origin: Origin, intentID: String?, reason: String, requestedBy: String, extraWhitelist: [String] = []) {
            self.state = state
            self.origin = origin
            self.intentID = intentID
            self.reason = reason
            self.requestedBy = requestedBy
            self.extraWhitelist = extraWhitelist
        }

        enum CodingKeys: String, CodingKey {
            case state, origin, intentID = "intent_id", reason, requestedBy = "requested_by", extraWhitelist = "extra_whitelist"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(state, forKey: .state)
            try c.encode(origin, forKey: .origin)
            try c.encode(intentID, forKey: .intentID)
            try c.encode(reason, forKey: .reason)
            try c.encode(requestedBy, forKey: .requestedBy)
            try c.encode(extraWhitelist, forKey: .extraWhitelist)
        }
    }

    /// What a server before 0.3.0 sends: the isolation alone, a local change known by the
    /// prefix it put on the requester.
    public init(legacy: DesiredIsolation) {
        let local = legacy.requestedBy.hasPrefix("local: ")
        self.init(generation: legacy.generation,
                  isolation: Isolation(state: legacy.state, origin: local ? .local : .server, intentID: legacy.intentID, reason: legacy.reason,
                                       requestedBy: local ? String(legacy.requestedBy.dropFirst("local: ".count)) : legacy.requestedBy))
    }

    /// What agents before 0.3.0 read from `/agent/v1/desired` and a report's `desired`: the
    /// isolation alone, a local change marked by its `requested_by` prefix as they expect.
    public var legacy: DesiredIsolation {
        DesiredIsolation(generation: generation, state: isolation.state, intentID: isolation.intentID, reason: isolation.reason,
                         requestedBy: isolation.origin == .local ? "local: " + isolation.requestedBy : isolation.requestedBy)
    }
}

public enum ModeWord: String, Codable, Sendable, CaseIterable {
    case discovery, enforce
}

/// The mode the server wants, and the intent (a rollout's step) that set it.
public struct ModeIntent: Codable, Sendable, Equatable {
    public var mode: ModeWord
    public var intentID: String?
    /// Seconds the host gives itself to confirm an enforce (its confirm window).
    public var confirmWithin: Int64

    public init(mode: ModeWord, intentID: String?, confirmWithin: Int64) {
        self.mode = mode
        self.intentID = intentID
        self.confirmWithin = confirmWithin
    }

    enum CodingKeys: String, CodingKey { case mode, intentID = "intent_id", confirmWithin = "confirm_within" }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mode, forKey: .mode)
        try c.encode(intentID, forKey: .intentID)
        try c.encode(confirmWithin, forKey: .confirmWithin)
    }
}

/// The union of the allow rules of every ruleset assigned to the host: its text (the ruleset
/// YAML a host reads), its digest, and where each rule came from.
public struct EffectivePolicy: Codable, Sendable, Equatable {
    public var content: String
    /// sha256 of `content`.
    public var digest: String
    public var sources: [RuleSource]

    public init(content: String, digest: String, sources: [RuleSource]) {
        self.content = content
        self.digest = digest
        self.sources = sources
    }

    /// One rule of the effective policy and the ruleset version and assignment that brought it.
    public struct RuleSource: Codable, Sendable, Equatable {
        /// `incoming from NETWORK` or `outgoing to NETWORK`, as the rule reads in `content`.
        public var rule: String
        public var ruleset: String
        public var version: Int64
        public var assignment: String

        public init(rule: String, ruleset: String, version: Int64, assignment: String) {
            self.rule = rule
            self.ruleset = ruleset
            self.version = version
            self.assignment = assignment
        }
    }
}
