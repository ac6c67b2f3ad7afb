import CordonCore
import CordonWire
import Crypto
import Foundation
import HTTPTypes
import Hummingbird

/// The console's cookie: `__Host-` so the browser only accepts it Secure, for `/`, from this very
/// host; HttpOnly so no script (an injected one included) can read it; SameSite=Strict so no
/// other site's page sends it.
enum ConsoleCookie {
    static let name = "__Host-cordon-session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    /// A session lasts a working day from sign-in, then the analyst signs in again.
    static let lifetime: TimeInterval = 8 * 3600

    static func cookie(_ secret: String, maxAge: Int) -> Cookie {
        Cookie(name: name, value: secret, maxAge: maxAge, path: "/", secure: true, httpOnly: true, sameSite: .strict)
    }

    /// Compared in time independent of where they differ: the token is a secret.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// `/api/v1/session`: the console signs in with an API token (of any role) and gets a session
/// cookie, reads its session back after a reload, and signs out.
struct SessionController {
    let stores: Stores
    let deadline: DatabaseDeadline

    /// Sign-in takes no credential but the one in its body, so it is outside the API's
    /// authentication; reading and ending a session go through it (the cookie, and for DELETE
    /// the CSRF token).
    func addRoutes(to router: Router<ServerContext>, api: RouterGroup<ServerContext>) {
        router.post("/api/v1/session", use: deadline(signIn, body: 4 << 10))
        api.get("session", use: deadline(show))
        api.delete("session", use: deadline(signOut))
    }

    @Sendable func signIn(_ request: Request, context: ServerContext) async throws -> Response {
        // A cross-site HTML form can post text/plain that parses as JSON, and so sign a victim's
        // browser in with the poster's token; it cannot send application/json without a CORS
        // preflight, which this server never grants.
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
            throw APIFailure(.unsupportedMediaType, "the sign-in is JSON (Content-Type: application/json)", field: "Content-Type")
        }
        let body = try await JSON.decode(SignIn.self, from: request, limit: 4 << 10)
        guard Credential.kind(of: body.token) == .apiToken else {
            throw APIFailure(.unauthorized, "expected an API token (cordon_api_…)", field: "token")
        }
        guard case .token(let id, let name, let role)? = try await stores.tokens.authenticate(token: body.token),
              let (secret, session) = try await stores.sessions.create(tokenID: id, lifetime: ConsoleCookie.lifetime) else {
            try await stores.audit.record(actor: "console", role: nil, action: "sign-in refused", target: nil, detail: "unknown or revoked token",
                                          remote: context.remote)
            throw APIFailure(.unauthorized, "the token is not valid (unknown or revoked)", field: "token")
        }
        try await stores.audit.record(actor: name, role: role.rawValue, action: "console sign-in", target: nil,
                                      detail: "session until \(TimeText.rfc3339(Int64(session.expiresAt.timeIntervalSince1970)))", remote: context.remote)
        var response = JSON.response(Self.view(session), status: .created)
        response.setCookie(ConsoleCookie.cookie(secret, maxAge: Int(ConsoleCookie.lifetime)))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func show(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        guard let secret = context.session, let session = try await stores.sessions.session(secret: secret) else {
            throw APIFailure(.notFound, "this request carries no console session (it used a bearer token)")
        }
        var response = JSON.response(Self.view(session))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func signOut(_ request: Request, context: ServerContext) async throws -> Response {
        let who = try context.require(.viewer)
        guard let secret = context.session else {
            throw APIFailure(.notFound, "this request carries no console session (it used a bearer token)")
        }
        try await stores.sessions.delete(secret: secret)
        try await stores.audit.record(actor: who.name, role: who.role.rawValue, action: "console sign-out", target: nil, detail: "",
                                      remote: context.remote)
        var response = JSON.response(["signed_out": true])
        response.setCookie(ConsoleCookie.cookie("", maxAge: 0))
        return response
    }

    static func view(_ session: ConsoleSession) -> ConsoleSessionView {
        guard case .token(_, let name, let role) = session.principal else { preconditionFailure("a console session is always a token's") }
        return ConsoleSessionView(name: name, role: role, csrfToken: session.csrf,
                                  expiresAt: TimeText.rfc3339(Int64(session.expiresAt.timeIntervalSince1970)))
    }
}
