import CordonWire
import Foundation
import Logging
import PostgresNIO

/// A console session: what an API token was exchanged for at sign-in. The browser holds the
/// secret in an HttpOnly cookie (script never sees it); the CSRF token is handed to the page and
/// must come back in a header with every state-changing request, which a cross-site form cannot do.
public struct ConsoleSession: Sendable, Equatable {
    public var principal: Principal
    public var csrf: String
    public var expiresAt: Date

    public init(principal: Principal, csrf: String, expiresAt: Date) {
        self.principal = principal
        self.csrf = csrf
        self.expiresAt = expiresAt
    }
}

/// Console sessions, stored (as hashes) so that signing out, and revoking the token signed in
/// with, end them on every replica at once. A session lasts a fixed time from sign-in and never
/// outlives its token.
public protocol SessionStore: Sendable {
    /// A new session for an API token: the cookie's secret and the session.
    func create(tokenID: UUID, lifetime: TimeInterval) async throws -> (secret: String, session: ConsoleSession)?
    /// The session the cookie's secret stands for, while it has not expired, been signed out of,
    /// or lost its token.
    func session(secret: String) async throws -> ConsoleSession?
    func delete(secret: String) async throws
}

public struct PostgresSessionStore: SessionStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func create(tokenID: UUID, lifetime: TimeInterval) async throws -> (secret: String, session: ConsoleSession)? {
        let secret = Credential.generate(.session), csrf = Credential.generate(.csrf)
        // Expired sessions go as new ones come: the table holds only live ones and the few since.
        try await client.query("DELETE FROM console_sessions WHERE expires_at < now()", logger: logger)
        let rows = try await client.query("""
            WITH made AS (
              INSERT INTO console_sessions (secret_hash, token_id, csrf, expires_at)
              SELECT \(Credential.hash(secret)), id, \(csrf), now() + make_interval(secs => \(lifetime))
              FROM api_tokens WHERE id = \(tokenID) AND revoked_at IS NULL
              RETURNING token_id, expires_at)
            SELECT t.id, t.name, t.role, made.expires_at FROM made JOIN api_tokens t ON t.id = made.token_id
            """, logger: logger)
        for try await (id, name, role, expires) in rows.decode((UUID, String, String, Date).self) {
            guard let role = Role(rawValue: role) else { return nil }
            return (secret, ConsoleSession(principal: .token(id: id, name: name, role: role), csrf: csrf, expiresAt: expires))
        }
        return nil
    }

    public func session(secret: String) async throws -> ConsoleSession? {
        guard Credential.kind(of: secret) == .session else { return nil }
        let rows = try await client.query("""
            SELECT t.id, t.name, t.role, s.csrf, s.expires_at FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
            WHERE s.secret_hash = \(Credential.hash(secret)) AND s.expires_at > now() AND t.revoked_at IS NULL
            """, logger: logger)
        for try await (id, name, role, csrf, expires) in rows.decode((UUID, String, String, String, Date).self) {
            guard let role = Role(rawValue: role) else { return nil }
            return ConsoleSession(principal: .token(id: id, name: name, role: role), csrf: csrf, expiresAt: expires)
        }
        return nil
    }

    public func delete(secret: String) async throws {
        try await client.query("DELETE FROM console_sessions WHERE secret_hash = \(Credential.hash(secret))", logger: logger)
    }
}
