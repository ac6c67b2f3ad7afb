import CordonWire
import Foundation
import Logging
import PostgresNIO

/// Who a request is: an analyst's API token, or a host's own credential.
public enum Principal: Sendable, Equatable {
    case token(id: UUID, name: String, role: Role)
    case host(id: UUID)
}

/// API tokens: created and revoked by `cordon-server token`, looked up by hash on every request.
public protocol TokenStore: Sendable {
    func create(name: String, role: Role) async throws -> (id: UUID, token: String)
    /// Revokes the tokens with this name or id; the number revoked.
    func revoke(_ nameOrID: String) async throws -> Int
    func authenticate(token: String) async throws -> Principal?
    /// A host credential that matches a revoked host: the agent is told so, not just refused.
    func isRevokedHost(token: String) async throws -> Bool
}

public struct PostgresTokenStore: TokenStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func create(name: String, role: Role) async throws -> (id: UUID, token: String) {
        let token = Credential.generate(.apiToken)
        let id = UUID()
        try await client.query("""
            INSERT INTO api_tokens (id, name, role, token_hash) VALUES (\(id), \(name), \(role.rawValue), \(Credential.hash(token)))
            """, logger: logger)
        return (id, token)
    }

    public func revoke(_ nameOrID: String) async throws -> Int {
        let rows: PostgresRowSequence
        if let id = UUID(uuidString: nameOrID) {
            rows = try await client.query("UPDATE api_tokens SET revoked_at = now() WHERE id = \(id) AND revoked_at IS NULL RETURNING id", logger: logger)
        } else {
            rows = try await client.query("UPDATE api_tokens SET revoked_at = now() WHERE name = \(nameOrID) AND revoked_at IS NULL RETURNING id", logger: logger)
        }
        var count = 0
        for try await _ in rows.decode(UUID.self) { count += 1 }
        return count
    }

    public func authenticate(token: String) async throws -> Principal? {
        switch Credential.kind(of: token) {
        case .apiToken:
            let rows = try await client.query("""
                SELECT id, name, role FROM api_tokens WHERE token_hash = \(Credential.hash(token)) AND revoked_at IS NULL
                """, logger: logger)
            for try await (id, name, role) in rows.decode((UUID, String, String).self) {
                guard let role = Role(rawValue: role) else { return nil }
                return .token(id: id, name: name, role: role)
            }
            return nil
        case .host:
            let rows = try await client.query("""
                SELECT id FROM hosts WHERE credential_hash = \(Credential.hash(token)) AND revoked_at IS NULL
                """, logger: logger)
            for try await id in rows.decode(UUID.self) { return .host(id: id) }
            return nil
        case .enrollSecret, .session, .csrf, nil:
            return nil
        }
    }
}

extension PostgresTokenStore {
    public func isRevokedHost(token: String) async throws -> Bool {
        guard Credential.kind(of: token) == .host else { return false }
        let rows = try await client.query("SELECT id FROM hosts WHERE credential_hash = \(Credential.hash(token)) AND revoked_at IS NOT NULL",
                                          logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }
}
