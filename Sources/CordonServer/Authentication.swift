import CordonWire
import Foundation
import Hummingbird

/// Reads `Authorization: Bearer …` into the context's principal. A missing or unknown token is
/// a 401 here; what a principal may do is each route's `require`.
struct Authentication: RouterMiddleware {
    typealias Context = ServerContext
    let tokens: any TokenStore
    /// An agent's routes take host credentials, the API's take tokens; neither reaches the other.
    let accepts: Credential.Kind
    let deadline: DatabaseDeadline

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are Bearer.
        guard let header = request.headers[.authorization], let space = header.firstIndex(of: " "),
              header[..<space].lowercased() == "bearer" else { throw APIFailure.unauthorized }
        let token = String(header[space...]).trimmingCharacters(in: .whitespaces)
        guard Credential.kind(of: token) == accepts else {
            throw APIFailure(.unauthorized, accepts == .host ? "agent routes take a host credential" : "the API takes an API token, not a host credential")
        }
        let tokens = tokens
        guard let principal = try await deadline.run({ try await tokens.authenticate(token: token) }) else {
            if try await deadline.run({ try await tokens.isRevokedHost(token: token) }) { throw APIFailure(.forbidden, "this host was revoked", code: .hostRevoked) }
            throw APIFailure(.unauthorized, "the token is not valid (unknown or revoked)")
        }
        var context = context
        context.principal = principal
        return try await next(request, context)
    }
}

extension ServerContext {
    /// The token's role must be at least `role`; a host credential is never enough for the API.
    func require(_ role: Role) throws -> (id: UUID, name: String, role: Role) {
        guard case .token(let id, let name, let held)? = principal else { throw APIFailure.unauthorized }
        guard held >= role else { throw APIFailure(.forbidden, "this needs the \(role.rawValue) role; the token has \(held.rawValue)") }
        return (id, name, held)
    }

    func requireHost() throws -> UUID {
        guard case .host(let id)? = principal else { throw APIFailure.unauthorized }
        return id
    }
}
