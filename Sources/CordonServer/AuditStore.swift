import CordonCore
import Foundation
import Logging
import PostgresNIO

/// Every state-changing call: who, what, when, from where. Written in the request's own path, so
/// a change whose audit entry cannot be written fails rather than goes unrecorded.
public protocol AuditStore: Sendable {
    func record(actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) async throws
    func entries(limit: Int) async throws -> [AuditEntry]
}

public struct AuditEntry: Codable, Sendable {
    public var id: Int64
    public var at: String
    public var actor: String
    public var role: String?
    public var action: String
    public var target: String?
    public var detail: String
    public var remote: String?

    public init(id: Int64, at: String, actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) {
        self.id = id
        self.at = at
        self.actor = actor
        self.role = role
        self.action = action
        self.target = target
        self.detail = detail
        self.remote = remote
    }
}

public struct PostgresAuditStore: AuditStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func record(actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) async throws {
        try await client.query("""
            INSERT INTO audit_log (actor, role, action, target, detail, remote) VALUES (\(actor), \(role), \(action), \(target), \(detail), \(remote))
            """, logger: logger)
    }

    public func entries(limit: Int) async throws -> [AuditEntry] {
        let rows = try await client.query("""
            SELECT id, at, actor, role, action, target, detail, remote FROM audit_log ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var result: [AuditEntry] = []
        for try await (id, at, actor, role, action, target, detail, remote) in rows.decode((Int64, Date, String, String?, String, String?, String, String?).self) {
            result.append(AuditEntry(id: id, at: Time.text(at), actor: actor, role: role, action: action, target: target, detail: detail, remote: remote))
        }
        return result
    }
}

/// Database timestamps as the agent's JSON writes times (`TimeText.rfc3339`, whole seconds, UTC).
enum Time {
    static func text(_ date: Date) -> String { TimeText.rfc3339(Int64(date.timeIntervalSince1970)) }
}
