import CordonCore
import Foundation
import GRDB

/// An approved ruleset version: the exact file content, its digest, who approved it and when.
public struct RulesetVersion: Codable, Sendable, Equatable {
    public var version: Int64
    public var digest: String
    public var content: String
    public var source: String
    public var `operator`: String
    public var approvedAt: Int64
    /// Lockout risks the operator accepted explicitly (`--accept-risk`); empty when there were none.
    public var acceptedRisks: [String]
}

extension FlowStore {
    static func registerDecisionMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2-rulesets-and-decisions") { db in
            try db.execute(sql: """
                CREATE TABLE rulesets (
                  version INTEGER PRIMARY KEY AUTOINCREMENT,
                  digest TEXT NOT NULL CHECK (length(digest) = 64),
                  content TEXT NOT NULL,
                  source TEXT NOT NULL,
                  operator TEXT NOT NULL CHECK (operator <> ''),
                  approved_at INTEGER NOT NULL,
                  accepted_risks TEXT NOT NULL DEFAULT ''
                );
                CREATE TABLE decisions (
                  seq INTEGER PRIMARY KEY AUTOINCREMENT,
                  id TEXT NOT NULL UNIQUE,
                  action TEXT NOT NULL,
                  operator TEXT NOT NULL,
                  reason TEXT NOT NULL,
                  backend TEXT NOT NULL,
                  policy TEXT NOT NULL,
                  policy_digest TEXT NOT NULL,
                  whitelist TEXT NOT NULL,
                  applied_at INTEGER NOT NULL,
                  outcome TEXT NOT NULL,
                  previous_hash TEXT NOT NULL,
                  hash TEXT NOT NULL UNIQUE
                );
                -- Approved versions and the log are history: never rewritten.
                CREATE TRIGGER rulesets_append_only_update BEFORE UPDATE ON rulesets
                  BEGIN SELECT RAISE(ABORT, 'rulesets are append-only'); END;
                CREATE TRIGGER rulesets_append_only_delete BEFORE DELETE ON rulesets
                  BEGIN SELECT RAISE(ABORT, 'rulesets are append-only'); END;
                CREATE TRIGGER decisions_append_only_update BEFORE UPDATE ON decisions
                  BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
                CREATE TRIGGER decisions_append_only_delete BEFORE DELETE ON decisions
                  BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
                """)
        }
    }

    /// The whitelist as data and the hash format; entries written before keep format 1 and
    /// verify as they were written.
    static func registerDecisionWhitelistMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v5-decision-whitelist") { db in
            try db.execute(sql: """
                ALTER TABLE decisions ADD COLUMN management_whitelist TEXT NOT NULL DEFAULT '[]';
                ALTER TABLE decisions ADD COLUMN hash_format INTEGER NOT NULL DEFAULT 1;
                """)
        }
    }

    /// Stores a new ruleset version and its decision-log entry in one transaction.
    @discardableResult
    public func approve(content: String, source: String, operator name: String, acceptedRisks: [String], reason: String,
                        at time: Int64 = TimeText.now()) throws -> RulesetVersion {
        let digest = ContentDigest.hex(content)
        return try pool.write { db in
            try db.execute(sql: """
                INSERT INTO rulesets (digest, content, source, operator, approved_at, accepted_risks) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [digest, content, source, name, time, acceptedRisks.joined(separator: ",")])
            let version = db.lastInsertedRowID
            let outcome = acceptedRisks.isEmpty ? "success" : "success (risks accepted: \(acceptedRisks.joined(separator: ", ")))"
            try Self.append(db, action: "approve", operator: name, reason: reason, backend: "", policy: content,
                            policyDigest: digest, whitelist: [], outcome: outcome, at: time)
            return RulesetVersion(version: version, digest: digest, content: content, source: source, operator: name,
                                  approvedAt: time, acceptedRisks: acceptedRisks)
        }
    }

    /// Records a decision: a refused approval, or a transition of the firewall with its outcome.
    /// `policyDigest` defaults to the SHA-256 of `policy`; an applied ruleset passes its approved digest.
    public func record(action: String, operator name: String, reason: String, policy: String, policyDigest: String? = nil,
                       backend: String = "", whitelist: [ManagementChannel.WhitelistEntry] = [], outcome: String,
                       at time: Int64 = TimeText.now()) throws {
        try pool.write { db in
            try Self.append(db, action: action, operator: name, reason: reason, backend: backend, policy: policy,
                            policyDigest: policyDigest ?? ContentDigest.hex(policy), whitelist: whitelist, outcome: outcome, at: time)
        }
    }

    static func append(_ db: Database, action: String, operator name: String, reason: String, backend: String, policy: String,
                       policyDigest: String, whitelist: [ManagementChannel.WhitelistEntry], outcome: String, at time: Int64) throws {
        let previous = try String.fetchOne(db, sql: "SELECT hash FROM decisions ORDER BY seq DESC LIMIT 1") ?? ""
        // The next number SQLite would give, including entries removed from the end since.
        let issued = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'decisions'") ?? 0
        let last = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM decisions") ?? 0
        var decision = Decision(sequence: max(issued, last) + 1, id: UUID().uuidString.lowercased(), action: action, operator: name,
                                reason: reason, backend: backend, policy: policy, policyDigest: policyDigest, managementWhitelist: whitelist,
                                whitelist: "", appliedAt: time, outcome: outcome, previousHash: previous, hash: "", format: Decision.currentFormat)
        decision.hash = ContentDigest.hex(Decision.chained(decision))
        try db.execute(sql: """
            INSERT INTO decisions (seq, id, action, operator, reason, backend, policy, policy_digest, whitelist, management_whitelist,
                                   applied_at, outcome, previous_hash, hash, hash_format)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)
            """, arguments: [decision.sequence, decision.id, action, name, reason, backend, policy, policyDigest,
                             Decision.whitelistJSON(whitelist), time, outcome, previous, decision.hash, decision.format])
    }

    public func rulesetVersions() throws -> [RulesetVersion] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM rulesets ORDER BY version").map(Self.version)
        }
    }

    public func ruleset(version: Int64) throws -> RulesetVersion? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM rulesets WHERE version = ?", arguments: [version]).map(Self.version)
        }
    }

    /// An approved version to install: its content must still hash to its digest, and the
    /// hash-chained decision log must hold the approval of that digest. A version edited in the
    /// database (the append-only trigger dropped, the content widened) is refused, not enforced.
    public func approvedRuleset(version: Int64) throws -> RulesetVersion? {
        guard let found = try ruleset(version: version) else { return nil }
        guard ContentDigest.hex(found.content) == found.digest else {
            throw StoreError.corrupt(path: path, detail: "approved ruleset version \(version) does not match its digest \(found.digest.prefix(16))…: "
                                     + "its content was changed after approval; refusing to install it")
        }
        let approvals = try pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM decisions WHERE action = 'approve' AND policy_digest = ? AND outcome LIKE 'success%'",
                             arguments: [found.digest]) ?? 0
        }
        guard approvals > 0 else {
            throw StoreError.corrupt(path: path, detail: "approved ruleset version \(version) (digest \(found.digest.prefix(16))…) has no approval "
                                     + "in the decision log; refusing to install it")
        }
        return found
    }

    public func latestRuleset() throws -> RulesetVersion? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM rulesets ORDER BY version DESC LIMIT 1").map(Self.version)
        }
    }

    public func decisions() throws -> [Decision] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM decisions ORDER BY seq").map(Self.decision)
        }
    }

    /// Checks the decision log: every entry's hash over its fields, every link to the entry
    /// before, every policy against its digest, and that no entry was removed (gaps in the
    /// sequence, or entries missing at the end, which `sqlite_sequence` still counts).
    /// Returns one line per problem; empty when the log is intact.
    public func verifyDecisions() throws -> [String] {
        try pool.read { db in
            let entries = try Row.fetchAll(db, sql: "SELECT * FROM decisions ORDER BY seq").map(Self.decision)
            var problems = Decision.verifyChain(entries)
            // Entries removed from the end leave no gap; SQLite's counter still remembers them.
            let last = entries.last?.sequence ?? 0
            let issued = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'decisions'") ?? 0
            if issued > last { problems.append("entries \(last + 1)-\(issued) were removed from the end of the log") }
            return problems
        }
    }

    /// How many entries come after `sequence` (what the server has not acknowledged).
    public func decisionCount(after sequence: Int64) throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM decisions WHERE seq > ?", arguments: [sequence]) ?? 0 }
    }

    /// The sequence of the last entry (0 for an empty log).
    public func latestDecisionSequence() throws -> Int64 {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM decisions") ?? 0 }
    }

    /// The sequence of the last isolate or release entry, whatever its outcome: what names a
    /// local isolation change when it is reported to the server.
    public func latestIsolationSequence() throws -> Int64? {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM decisions WHERE action IN ('isolate', 'release')") }
    }

    /// Entries after `sequence`, oldest first: what the server has not acknowledged yet.
    public func decisions(after sequence: Int64, limit: Int) throws -> [Decision] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM decisions WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [sequence, limit]).map(Self.decision)
        }
    }

    private static func decision(_ row: Row) -> Decision {
        let whitelist: String = row["management_whitelist"]
        return Decision(sequence: row["seq"], id: row["id"], action: row["action"], operator: row["operator"], reason: row["reason"],
                        backend: row["backend"], policy: row["policy"], policyDigest: row["policy_digest"],
                        // Unreadable JSON verifies as altered (its canonical form differs), never as a crash.
                        managementWhitelist: (try? JSONDecoder().decode([ManagementChannel.WhitelistEntry].self, from: Data(whitelist.utf8)))
                            ?? [ManagementChannel.WhitelistEntry(protocol: "?", address: whitelist, port: nil)],
                        whitelist: row["whitelist"], appliedAt: row["applied_at"], outcome: row["outcome"],
                        previousHash: row["previous_hash"], hash: row["hash"], format: row["hash_format"])
    }

    private static func version(_ row: Row) -> RulesetVersion {
        let risks: String = row["accepted_risks"]
        return RulesetVersion(version: row["version"], digest: row["digest"], content: row["content"], source: row["source"],
                              operator: row["operator"], approvedAt: row["approved_at"],
                              acceptedRisks: risks.isEmpty ? [] : risks.split(separator: ",").map(String.init))
    }
}
