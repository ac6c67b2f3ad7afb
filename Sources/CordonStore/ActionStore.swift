import CordonCore
import Foundation
import GRDB

/// A requested emergency action and what became of it, for automation to query
/// (`cordon actions --json`). Unlike the decision log, statuses change: pending, then applied,
/// failed, no-op or superseded. Nothing may stay pending: a release supersedes earlier isolates
/// still pending, and the agent settles what a crash left pending when it starts.
public struct ActionRecord: Codable, Sendable, Equatable {
    public typealias Status = ActionStatus
    public var id: String
    public var action: String
    public var `operator`: String
    public var reason: String
    public var requestedAt: Int64
    public var status: Status
    public var detail: String
    public var updatedAt: Int64
}

extension FlowStore {
    static func registerActionMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v4-actions") { db in
            try db.execute(sql: """
                CREATE TABLE actions (
                  seq INTEGER PRIMARY KEY AUTOINCREMENT,
                  id TEXT NOT NULL UNIQUE,
                  action TEXT NOT NULL,
                  operator TEXT NOT NULL,
                  reason TEXT NOT NULL,
                  requested_at INTEGER NOT NULL,
                  status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'failed', 'noop', 'superseded')),
                  detail TEXT NOT NULL,
                  updated_at INTEGER NOT NULL
                );
                """)
        }
    }

    /// Records a request as pending; returns its id.
    public func requestAction(_ action: String, operator name: String, reason: String, at time: Int64 = TimeText.now()) throws -> String {
        let id = UUID().uuidString.lowercased()
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO actions (id, action, operator, reason, requested_at, status, detail, updated_at)
                VALUES (?, ?, ?, ?, ?, 'pending', '', ?)
                """, arguments: [id, action, name, reason, time, time])
        }
        return id
    }

    public func settleAction(_ id: String, _ status: ActionRecord.Status, detail: String, at time: Int64 = TimeText.now()) throws {
        try pool.write { db in
            // A superseded request stays superseded: the release that superseded it won.
            try db.execute(sql: "UPDATE actions SET status = ?, detail = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                           arguments: [status.rawValue, detail, time, id])
        }
    }

    /// Marks every pending action of a kind as superseded (a release winning over isolates).
    public func supersedePending(_ action: String, by id: String, at time: Int64 = TimeText.now()) throws {
        try pool.write { db in
            try db.execute(sql: """
                UPDATE actions SET status = 'superseded', detail = 'superseded by ' || ?, updated_at = ?
                WHERE action = ? AND status = 'pending' AND id <> ?
                """, arguments: [id, time, action, id])
        }
    }

    /// At agent start: whatever a crash left pending failed (the state in force is reconciled separately).
    public func failPendingActions(detail: String, at time: Int64 = TimeText.now()) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE actions SET status = 'failed', detail = ?, updated_at = ? WHERE status = 'pending'",
                           arguments: [detail, time])
        }
    }

    public func actionStatus(_ id: String) throws -> ActionRecord.Status? {
        try pool.read { db in
            try String.fetchOne(db, sql: "SELECT status FROM actions WHERE id = ?", arguments: [id]).flatMap(ActionRecord.Status.init)
        }
    }

    public func actions() throws -> [ActionRecord] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM actions ORDER BY seq").map { row in
                ActionRecord(id: row["id"], action: row["action"], operator: row["operator"], reason: row["reason"],
                             requestedAt: row["requested_at"], status: ActionRecord.Status(rawValue: row["status"]) ?? .failed,
                             detail: row["detail"], updatedAt: row["updated_at"])
            }
        }
    }
}
