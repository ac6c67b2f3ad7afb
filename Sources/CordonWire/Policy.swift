import CordonCore
import Foundation

// Fleet policy in the API: reviews of a ruleset against the hosts a selector matches, immutable
// ruleset versions approved with their review, and assignments of versions to selectors.

/// `POST /api/v1/reviews`: a ruleset file's text against the record of the hosts `selector`
/// matches (the file's `appliesTo` when absent), over the last `since` (`7d` by default).
public struct ReviewRequest: Codable, Sendable {
    public var content: String
    public var selector: String?
    public var since: String?
    public init(content: String, selector: String?, since: String?) {
        self.content = content
        self.selector = selector
        self.since = since
    }
}

/// One host's verdict: what it would lose and what could lock its owner out.
public struct HostReview: Codable, Sendable, Equatable {
    public var id: String
    public var hostname: String
    public var flows: Int
    public var allowed: Int
    public var rejectedCount: Int
    /// The rejected flows, most connections first (at most `HostReview.shown`).
    public var rejected: [FlowRecord]
    public var risks: [Review.Risk]
    public static let shown = 20

    enum CodingKeys: String, CodingKey { case id, hostname, flows, allowed, rejectedCount = "rejected_count", rejected, risks }

    public init(id: String, hostname: String, flows: Int, allowed: Int, rejectedCount: Int, rejected: [FlowRecord], risks: [Review.Risk]) {
        self.id = id
        self.hostname = hostname
        self.flows = flows
        self.allowed = allowed
        self.rejectedCount = rejectedCount
        self.rejected = rejected
        self.risks = risks
    }

    /// Losing traffic it had, or at risk of a lockout: what stops an approval.
    public var clean: Bool { rejectedCount == 0 && risks.isEmpty }
}

public struct ReviewResult: Codable, Sendable {
    /// The selector as the server read it (canonical).
    public var selector: String
    public var since: String
    public var sha256: String
    public var hosts: [HostReview]

    public init(selector: String, since: String, sha256: String, hosts: [HostReview]) {
        self.selector = selector
        self.since = since
        self.sha256 = sha256
        self.hosts = hosts
    }

    public var summary: ReviewSummary {
        ReviewSummary(hosts: hosts.count, losingTraffic: hosts.filter { $0.rejectedCount > 0 }.count, withRisks: hosts.filter { !$0.risks.isEmpty }.count)
    }
}

/// What a version was approved with.
public struct ReviewSummary: Codable, Sendable, Equatable {
    public var hosts: Int
    public var losingTraffic: Int
    public var withRisks: Int
    enum CodingKeys: String, CodingKey { case hosts, losingTraffic = "losing_traffic", withRisks = "with_risks" }
    public init(hosts: Int, losingTraffic: Int, withRisks: Int) {
        self.hosts = hosts
        self.losingTraffic = losingTraffic
        self.withRisks = withRisks
    }
}

/// `POST /api/v1/rulesets/{name}/versions`: approve a new version. The server reviews it first
/// (as `POST /api/v1/reviews`) and refuses it while a host has a lockout risk, unless
/// `accept_risks` says the approver has read them.
public struct ApproveRequest: Codable, Sendable {
    public var content: String
    public var selector: String?
    public var since: String?
    public var acceptRisks: Bool
    enum CodingKeys: String, CodingKey { case content, selector, since, acceptRisks = "accept_risks" }
    public init(content: String, selector: String?, since: String?, acceptRisks: Bool) {
        self.content = content
        self.selector = selector
        self.since = since
        self.acceptRisks = acceptRisks
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        content = try c.decode(String.self, forKey: .content)
        selector = try c.decodeIfPresent(String.self, forKey: .selector)
        since = try c.decodeIfPresent(String.self, forKey: .since)
        acceptRisks = c.contains(.acceptRisks) ? try c.decode(Bool.self, forKey: .acceptRisks) : false
    }
}

public struct RulesetVersionView: Codable, Sendable, Equatable {
    public var name: String
    public var version: Int64
    public var sha256: String
    public var approvedBy: String
    public var approvedAt: String
    /// The selector it was reviewed against.
    public var selector: String
    /// The risks the approver accepted, as the review said them ("host: message").
    public var risksAccepted: [String]
    public var review: ReviewSummary
    /// The ruleset's text; only in `GET /api/v1/rulesets/{name}/versions/{version}`, null in lists.
    public var content: String?

    enum CodingKeys: String, CodingKey {
        case name, version, sha256, approvedBy = "approved_by", approvedAt = "approved_at", selector, risksAccepted = "risks_accepted", review, content
    }

    public init(name: String, version: Int64, sha256: String, approvedBy: String, approvedAt: String, selector: String, risksAccepted: [String],
                review: ReviewSummary, content: String?) {
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.approvedBy = approvedBy
        self.approvedAt = approvedAt
        self.selector = selector
        self.risksAccepted = risksAccepted
        self.review = review
        self.content = content
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(version, forKey: .version)
        try c.encode(sha256, forKey: .sha256)
        try c.encode(approvedBy, forKey: .approvedBy)
        try c.encode(approvedAt, forKey: .approvedAt)
        try c.encode(selector, forKey: .selector)
        try c.encode(risksAccepted, forKey: .risksAccepted)
        try c.encode(review, forKey: .review)
        try c.encode(content, forKey: .content)
    }
}

/// `POST /api/v1/assignments`: `version` null means the latest approved, now and later.
public struct AssignmentRequest: Codable, Sendable {
    public var ruleset: String
    public var version: Int64?
    public var selector: String
    public init(ruleset: String, version: Int64?, selector: String) {
        self.ruleset = ruleset
        self.version = version
        self.selector = selector
    }
}

public struct AssignmentView: Codable, Sendable, Equatable {
    public var id: String
    public var ruleset: String
    /// null: the latest approved version.
    public var version: Int64?
    /// The version it brings now.
    public var resolvedVersion: Int64
    public var selector: String
    public var createdBy: String
    public var createdAt: String
    /// How many hosts it matches now.
    public var hosts: Int

    enum CodingKeys: String, CodingKey {
        case id, ruleset, version, resolvedVersion = "resolved_version", selector, createdBy = "created_by", createdAt = "created_at", hosts
    }

    public init(id: String, ruleset: String, version: Int64?, resolvedVersion: Int64, selector: String, createdBy: String, createdAt: String, hosts: Int) {
        self.id = id
        self.ruleset = ruleset
        self.version = version
        self.resolvedVersion = resolvedVersion
        self.selector = selector
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.hosts = hosts
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(ruleset, forKey: .ruleset)
        try c.encode(version, forKey: .version)
        try c.encode(resolvedVersion, forKey: .resolvedVersion)
        try c.encode(selector, forKey: .selector)
        try c.encode(createdBy, forKey: .createdBy)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(hosts, forKey: .hosts)
    }
}

/// `GET /api/v1/rulesets`: every ruleset with its versions (newest first) and its assignments.
public struct RulesetView: Codable, Sendable, Equatable {
    public var name: String
    public var versions: [RulesetVersionView]
    public var assignments: [AssignmentView]
    public init(name: String, versions: [RulesetVersionView], assignments: [AssignmentView]) {
        self.name = name
        self.versions = versions
        self.assignments = assignments
    }
}

/// A host's policy as the API shows it: what its assignments make it, what its document asks,
/// what it runs, and whether those agree.
public struct HostPolicyView: Codable, Sendable, Equatable {
    /// The effective policy its assignments give it now; null when none matches it.
    public var assigned: EffectivePolicy?
    /// The policy in the host's document (set by a rollout); null when none.
    public var desiredDigest: String?
    /// What the agent reports in force; null in discovery.
    public var inForceDigest: String?
    /// `in_sync`; `pending` (assigned, not rolled out); `applying`; `error` (the agent could not
    /// apply the document's mode or policy: `error` says why); `drift` (the host runs something
    /// other than its applied document, or another program changed its tables lately and the
    /// guard put them back); `offline`.
    public var sync: String
    /// The agent's message when `sync` is `error`.
    public var error: String? = nil

    enum CodingKeys: String, CodingKey { case assigned, desiredDigest = "desired_digest", inForceDigest = "in_force_digest", sync, error }

    public init(assigned: EffectivePolicy?, desiredDigest: String?, inForceDigest: String?, sync: String) {
        self.assigned = assigned
        self.desiredDigest = desiredDigest
        self.inForceDigest = inForceDigest
        self.sync = sync
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(assigned, forKey: .assigned)
        try c.encode(desiredDigest, forKey: .desiredDigest)
        try c.encode(inForceDigest, forKey: .inForceDigest)
        try c.encode(sync, forKey: .sync)
        try c.encode(error, forKey: .error)
    }
}

/// `POST /api/v1/proposals`: one ruleset for the hosts `selector` matches, from their merged
/// record. `standard_networks` is the standard networks file the analyst's `cordon` has (the
/// server ships none of its own, so the proposal uses the analyst's definitions).
public struct ProposalRequest: Codable, Sendable {
    public var selector: String
    public var since: String?
    public var minCoverage: Int?
    public var standardNetworks: String
    enum CodingKeys: String, CodingKey { case selector, since, minCoverage = "min_coverage", standardNetworks = "standard_networks" }
    public init(selector: String, since: String?, minCoverage: Int?, standardNetworks: String) {
        self.selector = selector
        self.since = since
        self.minCoverage = minCoverage
        self.standardNetworks = standardNetworks
    }
}

public struct ProposalResult: Codable, Sendable, Equatable {
    /// The ruleset file, with its coverage comments and outliers.
    public var text: String
    public var hosts: Int
    public var flows: Int
    public var candidates: Int
    public var outliers: Int
    public init(text: String, hosts: Int, flows: Int, candidates: Int, outliers: Int) {
        self.text = text
        self.hosts = hosts
        self.flows = flows
        self.candidates = candidates
        self.outliers = outliers
    }
}
