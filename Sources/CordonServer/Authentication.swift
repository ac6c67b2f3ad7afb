import CordonWire
import Foundation
import Hummingbird

/// Reads `Authorization: Bearer …` into the context's principal, or, on the API's routes, the
/// console's session cookie. A missing or unknown credential is a 401 here; what a principal may
/// do is each route's `require`.
struct Authentication: RouterMiddleware {
    typealias Context = ServerContext
    let tokens: any TokenStore
    /// Nil on the agent's routes: a cookie never stands for a host.
    var sessions: (any SessionStore)? = nil
    /// An agent's routes take host credentials, the API's take tokens; neither reaches the other.
    let accepts: Credential.Kind
    let deadline: DatabaseDeadline

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            if let sessions, let secret = request.cookies[ConsoleCookie.name]?.value {
                return try await next(request, try await session(secret, sessions: sessions, request: request, context: context))
            }
            throw APIFailure.unauthorized
        }
        // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are Bearer.
        guard let space = header.firstIndex(of: " "), header[..<space].lowercased() == "bearer" else { throw APIFailure.unauthorized }
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

    /// The cookie's session as the principal. A request that changes anything must also carry
    /// the session's CSRF token in `X-CSRF-Token`: the cookie alone is what a forged cross-site
    /// request would have (SameSite=Strict is the second lock, not the only one).
    private func session(_ secret: String, sessions: any SessionStore, request: Request, context: ServerContext) async throws -> ServerContext {
        guard let session = try await deadline.run({ try await sessions.session(secret: secret) }) else {
            throw APIFailure(.unauthorized, "the console session has expired or was signed out; sign in again")
        }
        if ![.get, .head].contains(request.method) {
            guard let sent = request.headers[ConsoleCookie.csrfHeader], ConsoleCookie.same(sent, session.csrf) else {
                throw APIFailure(.forbidden, "a request with the console's session needs its CSRF token in X-CSRF-Token", field: "X-CSRF-Token")
            }
        }
        var context = context
        context.principal = session.principal
        context.session = secret
        return context
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
