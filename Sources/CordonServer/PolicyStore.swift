import CordonCore
import CordonWire
import Foundation
import Logging
import PostgresNIO

/// A refusal of the policy store, as the API says it.
public enum PolicyRefusal: Error, Equatable {
    case noRuleset(String)
    case noVersion(String, Int64)
    case noAssignment
}

/// Rulesets, their immutable versions, their assignments, and the effective policy each host's
/// assignments give it now.
public protocol PolicyStore: Sendable {
    func rulesets() async throws -> [(name: String, versions: [RulesetVersionView])]
    /// `version` nil: the latest.
    func version(name: String, version: Int64?) async throws -> RulesetVersionView?
    /// Stores the next version of `name`; its number.
    func addVersion(name: String, content: String, sha256: String, approvedBy: String, selector: String, review: ReviewSummary,
                    risksAccepted: [String]) async throws -> RulesetVersionView
    func assignments() async throws -> [StoredAssignment]
    func addAssignment(ruleset: String, version: Int64?, selector: String, by name: String) async throws -> UUID
    /// false when there is no such active assignment.
    func removeAssignment(_ id: UUID, by name: String) async throws -> Bool
    /// Each host's assigned policy digest (hosts without one are absent).
    func assignedDigests() async throws -> [UUID: String]
    /// Writes the hosts' new assigned policies (nil: none any more).
    func setAssigned(_ policies: [UUID: EffectivePolicy?]) async throws
}

public struct StoredAssignment: Sendable, Equatable {
    public var id: UUID
    public var ruleset: String
    public var version: Int64?
    public var selector: String
    public var createdBy: String
    public var createdAt: Date

    public init(id: UUID, ruleset: String, version: Int64?, selector: String, createdBy: String, createdAt: Date) {
        self.id = id
        self.ruleset = ruleset
        self.version = version
        self.selector = selector
        self.createdBy = createdBy
        self.createdAt = createdAt
    }
}

public struct PostgresPolicyStore: PolicyStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    static let versionColumns = "name, version, sha256, approved_by, approved_at, selector, risks_accepted::text, review::text"

    private static func views(_ rows: PostgresRowSequence, content: Bool) async throws -> [RulesetVersionView] {
        var result: [RulesetVersionView] = []
        for try await row in rows {
            let (name, version, sha, by, at, selector, risks, review) = try row.decode((String, Int64, String, String, Date, String, String, String).self)
            var text: String?
            if content { text = try row.makeRandomAccess()[8].decode(String.self, context: .default) }
            result.append(RulesetVersionView(
                name: name, version: version, sha256: sha, approvedBy: by, approvedAt: Time.text(at), selector: selector,
                risksAccepted: (try? Wire.decode([String].self, from: Data(risks.utf8))) ?? [],
                review: (try? Wire.decode(ReviewSummary.self, from: Data(review.utf8))) ?? ReviewSummary(hosts: 0, losingTraffic: 0, withRisks: 0),
                content: text))
        }
        return result
    }

    public func rulesets() async throws -> [(name: String, versions: [RulesetVersionView])] {
        let all = try await Self.views(try await client.query("""
            SELECT \(unescaped: Self.versionColumns) FROM ruleset_versions ORDER BY name, version DESC
            """, logger: logger), content: false)
        var result: [(name: String, versions: [RulesetVersionView])] = []
        for version in all {
            if result.last?.name == version.name { result[result.count - 1].versions.append(version) } else { result.append((version.name, [version])) }
        }
        return result
    }

    public func version(name: String, version: Int64?) async throws -> RulesetVersionView? {
        try await Self.views(try await client.query("""
            SELECT \(unescaped: Self.versionColumns), content FROM ruleset_versions
            WHERE name = \(name) AND (\(version)::bigint IS NULL OR version = \(version)) ORDER BY version DESC LIMIT 1
            """, logger: logger), content: true).first
    }

    public func addVersion(name: String, content: String, sha256: String, approvedBy: String, selector: String, review: ReviewSummary,
                           risksAccepted: [String]) async throws -> RulesetVersionView {
        try await client.transaction(logger: logger) { connection in
            // One approval of a name at a time: the next number is read and used under this lock.
            try await connection.query("SELECT pg_advisory_xact_lock(7411003, hashtext(\(name)))", logger: logger)
            var next: Int64 = 1
            for try await value in try await connection.query("SELECT coalesce(max(version), 0) + 1 FROM ruleset_versions WHERE name = \(name)",
                                                              logger: logger).decode(Int64.self) { next = value }
            try await connection.query("""
                INSERT INTO ruleset_versions (name, version, content, sha256, approved_by, selector, risks_accepted, review)
                VALUES (\(name), \(next), \(content), \(sha256), \(approvedBy), \(selector),
                        \(String(decoding: Wire.encode(risksAccepted), as: UTF8.self))::jsonb, \(String(decoding: Wire.encode(review), as: UTF8.self))::jsonb)
                """, logger: logger)
            return RulesetVersionView(name: name, version: next, sha256: sha256, approvedBy: approvedBy, approvedAt: Time.text(Date()),
                                      selector: selector, risksAccepted: risksAccepted, review: review, content: nil)
        }
    }

    public func assignments() async throws -> [StoredAssignment] {
        var result: [StoredAssignment] = []
        for try await (id, ruleset, version, selector, by, at) in try await client.query("""
            SELECT id, ruleset, version, selector, created_by, created_at FROM assignments WHERE removed_at IS NULL ORDER BY ruleset, created_at
            """, logger: logger).decode((UUID, String, Int64?, String, String, Date).self) {
            result.append(StoredAssignment(id: id, ruleset: ruleset, version: version, selector: selector, createdBy: by, createdAt: at))
        }
        return result
    }

    public func addAssignment(ruleset: String, version: Int64?, selector: String, by name: String) async throws -> UUID {
        let id = UUID()
        try await client.query("""
            INSERT INTO assignments (id, ruleset, version, selector, created_by) VALUES (\(id), \(ruleset), \(version), \(selector), \(name))
            """, logger: logger)
        return id
    }

    public func removeAssignment(_ id: UUID, by name: String) async throws -> Bool {
        var removed = false
        for try await _ in try await client.query("""
            UPDATE assignments SET removed_at = now(), removed_by = \(name) WHERE id = \(id) AND removed_at IS NULL RETURNING id
            """, logger: logger).decode(UUID.self) { removed = true }
        return removed
    }

    public func assignedDigests() async throws -> [UUID: String] {
        var result: [UUID: String] = [:]
        for try await (id, digest) in try await client.query("""
            SELECT id, assigned_policy->>'digest' FROM hosts WHERE assigned_policy IS NOT NULL
            """, logger: logger).decode((UUID, String).self) { result[id] = digest }
        return result
    }

    public func setAssigned(_ policies: [UUID: EffectivePolicy?]) async throws {
        guard !policies.isEmpty else { return }
        let ids = Array(policies.keys)
        // An empty text stands for none: arrays of optionals do not go over the wire.
        let texts: [String] = ids.map { id in policies[id]!.map { String(decoding: Wire.encode($0), as: UTF8.self) } ?? "" }
        try await client.query("""
            UPDATE hosts SET assigned_policy = NULLIF(changed.policy, '')::jsonb
            FROM unnest(\(ids)::uuid[], \(texts)::text[]) AS changed (id, policy) WHERE hosts.id = changed.id
            """, logger: logger)
    }
}
