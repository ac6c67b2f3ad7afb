import CordonCore
import Foundation
import GRDB

/// A decision-log entry as the runner resolved it (policy text, digest, channel).
public struct DecisionDraft: Sendable, Equatable {
    public var action: String
    public var `operator`: String
    public var reason: String
    public var policy: String
    /// The approved digest of an applied ruleset; nil: the SHA-256 of `policy`.
    public var policyDigest: String?
    public var backend: String
    public var whitelist: [ManagementChannel.WhitelistEntry]
    public var outcome: String

    public init(action: String, operator name: String, reason: String, policy: String, policyDigest: String?, backend: String,
                whitelist: [ManagementChannel.WhitelistEntry], outcome: String) {
        self.action = action
        self.operator = name
        self.reason = reason
        self.policy = policy
        self.policyDigest = policyDigest
        self.backend = backend
        self.whitelist = whitelist
        self.outcome = outcome
    }
}

/// The agent's persisted firewall state: two typed records (`enforcement`, `isolation`) and the
/// channel they were installed with, read and written together. Only the transition runner
/// writes them; everything else reads them through `hostState()`.
extension FlowStore {
    static let enforcementRecord = "enforcement"
    static let isolationRecord = "isolation"
    public static let managementRecord = "management"
    public static let logGroupRecord = "log_group"

    /// The state as persisted (the defaults before the first transition). A record that cannot
    /// be decoded is an error naming it: never guess a firewall mode or an isolation.
    public func hostState() throws -> HostState {
        try Self.describing(path) {
            try pool.read { db in try Self.hostState(db, path: path) }
        }
    }

    /// The management channel the agent last installed (nil before the first transition). One
    /// that cannot be decoded is an error: guessing a channel could cut the collector.
    public func persistedManagement() throws -> ManagementChannel? {
        guard let text = try state(Self.managementRecord) else { return nil }
        do {
            return try JSONDecoder().decode(ManagementChannel.self, from: Data(text.utf8))
        } catch {
            throw StoreError.corrupt(path: path, detail: "agent_state '\(Self.managementRecord)' is unreadable (\(error)); not guessing a management channel")
        }
    }

    /// The NFLOG group the agent last installed, nil before the first transition.
    public func persistedLogGroup() throws -> UInt16? { try state(Self.logGroupRecord).flatMap { UInt16($0) } }

    static func hostState(_ db: Database, path: String) throws -> HostState {
        func record<T: Decodable>(_ name: String, _ type: T.Type) throws -> T? {
            guard let text = try String.fetchOne(db, sql: "SELECT value FROM agent_state WHERE name = ?", arguments: [name]) else {
                return nil
            }
            do {
                return try JSONDecoder().decode(T.self, from: Data(text.utf8))
            } catch {
                throw StoreError.corrupt(path: path, detail: "agent_state '\(name)' is unreadable (\(error)); not guessing the firewall's state")
            }
        }
        return HostState(enforcement: try record(enforcementRecord, EnforcementState.self) ?? EnforcementState(),
                         isolation: try record(isolationRecord, IsolationState.self) ?? IsolationState())
    }

    /// One transition's records in one transaction: the state (nil: left as it is), the channel
    /// it was installed with, action statuses, superseded isolates, and the decision-log entries.
    public func commitTransition(state: HostState?, management: String?, logGroup: UInt16?, actions: [(id: String, outcome: ActionOutcome)],
                                 supersedeIsolatesBy releases: [String], entries: [DecisionDraft], at time: Int64 = TimeText.now()) throws {
        try Self.describing(path) {
            try pool.write { db in
                var values: [(String, String)] = []
                if let state {
                    values.append((Self.enforcementRecord, String(decoding: try JSONEncoder().encode(state.enforcement), as: UTF8.self)))
                    values.append((Self.isolationRecord, String(decoding: try JSONEncoder().encode(state.isolation), as: UTF8.self)))
                }
                if let management { values.append((Self.managementRecord, management)) }
                if let logGroup { values.append((Self.logGroupRecord, String(logGroup))) }
                for (name, value) in values {
                    try db.execute(sql: """
                        INSERT INTO agent_state (name, value, updated_at) VALUES (?, ?, ?)
                        ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                        """, arguments: [name, value, time])
                }
                for release in releases {
                    try db.execute(sql: """
                        UPDATE actions SET status = 'superseded', detail = 'superseded by ' || ?, updated_at = ?
                        WHERE action = 'isolate' AND status = 'pending' AND id <> ?
                        """, arguments: [release, time, release])
                }
                for (id, outcome) in actions {
                    try db.execute(sql: "UPDATE actions SET status = ?, detail = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                                   arguments: [outcome.status.rawValue, outcome.detail, time, id])
                }
                for entry in entries {
                    try Self.append(db, action: entry.action, operator: entry.operator, reason: entry.reason, backend: entry.backend,
                                    policy: entry.policy, policyDigest: entry.policyDigest ?? ContentDigest.hex(entry.policy),
                                    whitelist: entry.whitelist, outcome: entry.outcome, at: time)
                }
            }
        }
    }
}
