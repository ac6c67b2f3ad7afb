import CordonWire
import Foundation
import Logging
import PostgresNIO

/// Enrollment secrets and the hosts they admit.
public protocol EnrollmentStore: Sendable {
    /// `hostTags: false`: tags an agent claims for itself are ignored for hosts this secret admits.
    /// `extraWhitelist`: what the hosts it admits keep open while isolated (`--extra-allow` syntax, checked by the caller).
    func createSecret(tags: [String: String], ttlSeconds: Int64?, uses: Int?, hostTags: Bool, extraWhitelist: [String]) async throws -> String
    /// The new host's id and credential; nil when the secret is unknown, expired, used up or revoked.
    func enroll(_ request: EnrollRequest) async throws -> EnrollResponse?
    /// Revokes a host by id; false when there is no such host.
    func revokeHost(_ id: UUID) async throws -> Bool
}

public struct PostgresEnrollmentStore: EnrollmentStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func createSecret(tags: [String: String], ttlSeconds: Int64?, uses: Int?, hostTags: Bool, extraWhitelist: [String]) async throws -> String {
        let secret = Credential.generate(.enrollSecret)
        let expires = ttlSeconds.map { Date().addingTimeInterval(Double($0)) }
        let tagsJSON = String(decoding: Wire.encode(tags), as: UTF8.self)
        try await client.query("""
            INSERT INTO enroll_secrets (id, secret_hash, tags, expires_at, uses_left, host_tags, extra_whitelist)
            VALUES (\(UUID()), \(Credential.hash(secret)), \(tagsJSON)::jsonb, \(expires), \(uses.map { Int32($0) }), \(hostTags),
                    \(String(decoding: Wire.encode(extraWhitelist), as: UTF8.self))::jsonb)
            """, logger: logger)
        return secret
    }

    public func enroll(_ request: EnrollRequest) async throws -> EnrollResponse? {
        try await client.transaction(logger: logger) { connection in
            // Taken under a row lock, so that N uses admit N hosts and not more, whatever the replicas.
            let rows = try await connection.query("""
                SELECT id, tags::text, host_tags, extra_whitelist::text FROM enroll_secrets
                WHERE secret_hash = \(Credential.hash(request.secret)) AND revoked_at IS NULL
                  AND (expires_at IS NULL OR expires_at > now()) AND (uses_left IS NULL OR uses_left > 0)
                FOR UPDATE
                """, logger: logger)
            var found: (UUID, String, Bool, String)?
            for try await row in rows.decode((UUID, String, Bool, String).self) { found = row }
            guard let (secretID, tagsText, hostTags, whitelistText) = found else { return nil }
            try await connection.query("UPDATE enroll_secrets SET uses_left = uses_left - 1 WHERE id = \(secretID) AND uses_left IS NOT NULL",
                                       logger: logger)
            // The secret's tags win over the host's own: the secret is what the administrator chose.
            // Each tag keeps where it came from, and a secret may refuse the host's claims outright.
            var tags = hostTags ? request.tags : [:]
            var sources = tags.mapValues { _ in "host" }
            for (key, value) in (try? Wire.decode([String: String].self, from: Data(tagsText.utf8))) ?? [:] {
                tags[key] = value
                sources[key] = "secret"
            }
            let id = UUID()
            let credential = Credential.generate(.host)
            var desired = DesiredState.initial
            desired.isolation.extraWhitelist = (try? Wire.decode([String].self, from: Data(whitelistText.utf8))) ?? []
            try await connection.query("""
                INSERT INTO hosts (id, hostname, machine_id, addresses, agent_version, tags, tag_sources, credential_hash, enroll_secret, desired)
                VALUES (\(id), \(request.hostname), \(request.machineID), \(String(decoding: Wire.encode(request.addresses), as: UTF8.self))::jsonb,
                        \(request.agentVersion), \(String(decoding: Wire.encode(tags), as: UTF8.self))::jsonb,
                        \(String(decoding: Wire.encode(sources), as: UTF8.self))::jsonb, \(Credential.hash(credential)), \(secretID),
                        \(String(decoding: Wire.encode(desired), as: UTF8.self))::jsonb)
                """, logger: logger)
            return EnrollResponse(hostID: id.uuidString.lowercased(), credential: credential)
        }
    }

    public func revokeHost(_ id: UUID) async throws -> Bool {
        var count = 0
        for try await _ in try await client.query("UPDATE hosts SET revoked_at = coalesce(revoked_at, now()) WHERE id = \(id) RETURNING id",
                                                  logger: logger).decode(UUID.self) { count += 1 }
        return count > 0
    }
}
