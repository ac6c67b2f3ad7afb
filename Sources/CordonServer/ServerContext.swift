import _ConnectionPoolModule
import CordonWire
import Foundation
import Hummingbird
import NIOCore
import PostgresNIO
import Logging

/// Each request's context: where it came from (for the audit log) and who it is, once
/// `Authentication` has looked at its bearer token.
public struct ServerContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public var remoteAddress: SocketAddress?
    public var principal: Principal?
    /// The console session's secret, when the principal came from its cookie.
    public var session: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        principal = nil
        session = nil
    }

    /// The peer's address as text: the audit log's "from where".
    public var remote: String? { remoteAddress?.ipAddress }
}

/// An answer other than success, always as a JSON body naming what is wrong.
public struct APIFailure: Error {
    public var status: HTTPResponse.Status
    public var body: WireError

    public init(_ status: HTTPResponse.Status, _ message: String, field: String? = nil, code: WireError.Code? = nil) {
        self.status = status
        body = WireError(message, field: field, code: code)
    }

    public static let unauthorized = APIFailure(.unauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN)")
}

/// JSON in and out, with the limits and errors every controller shares.
enum JSON {
    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        var buffer = ByteBuffer()
        buffer.writeBytes(Wire.encode(value))
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
    }

    /// The body as `T`; a body that is too large, not JSON, or missing a field is a 400 naming it.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 1 << 20) async throws -> T {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: limit) } catch {
            throw APIFailure(.contentTooLarge, "the body is larger than \(limit) bytes")
        }
        let value: T
        do {
            value = try Wire.decode(type, from: Data(buffer.readableBytesView))
        } catch {
            let (field, message) = Wire.describe(error)
            throw APIFailure(.badRequest, message, field: field)
        }
        if mayHoldNUL(buffer.readableBytesView), let field = fieldWithNUL(value) {
            throw APIFailure(.badRequest, "text may not contain NUL (\\u0000)", field: field)
        }
        return value
    }

    /// Whether a decoded text can hold a NUL at all: JSON writes one as the escape `\u0000` (a
    /// raw one is not JSON). Walking the decoded value by reflection cost a quarter of the
    /// server's CPU under agents' reports; the bytes are scanned instead, and walked only when
    /// the escape is there.
    static func mayHoldNUL(_ bytes: ByteBufferView) -> Bool {
        var state = 0
        for byte in bytes {
            if byte == 0 { return true }
            switch (state, byte) {
            case (_, UInt8(ascii: "\\")): state = state == 1 ? 0 : 1
            case (1, UInt8(ascii: "u")): state = 2
            case (2...4, UInt8(ascii: "0")): state += 1
            case (5, UInt8(ascii: "0")): return true
            default: state = 0
            }
        }
        return false
    }

    /// As `decode`, for a body that may be left out: an empty one is nil.
    static func decodeOptional<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 1 << 20) async throws -> T? {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch {
            throw APIFailure(.contentTooLarge, "the body is larger than \(limit) bytes")
        }
        guard buffer.readableBytes > 0 else { return nil }
        return try await decode(type, from: request, limit: limit)
    }

    /// The first decoded text holding a NUL, as a field path (`log.reason`): PostgreSQL's text and
    /// jsonb refuse NUL, which would otherwise surface as a database failure. Fields the server
    /// does not decode (from a newer agent, say) are not stored and may hold anything.
    static func fieldWithNUL(_ value: Any, path: String = "") -> String? {
        if let text = value as? String { return text.utf8.contains(0) ? (path.isEmpty ? "body" : path) : nil }
        let mirror = Mirror(reflecting: value)
        let named = mirror.displayStyle == .struct || mirror.displayStyle == .class
        for child in mirror.children {
            var inner = path
            if named, let label = child.label {
                let field = label.reduce(into: "") { name, c in name += c.isUppercase ? "_" + c.lowercased() : String(c) }
                inner = path.isEmpty ? field : path + "." + field
            }
            if let found = fieldWithNUL(child.value, path: inner) { return found }
        }
        return nil
    }

    static func uuid(_ text: String?, field: String) throws -> UUID {
        guard let text, let id = UUID(uuidString: text) else { throw APIFailure(.badRequest, "expected a UUID", field: field) }
        return id
    }
}

extension String {
    /// A length as JSON Schema counts it (code points), so the limits the OpenAPI document states
    /// are the ones enforced.
    var schemaLength: Int { unicodeScalars.count }

    /// Nothing but white space as the document's `\S` pattern sees it (ECMAScript's `\s`).
    var isBlank: Bool {
        unicodeScalars.allSatisfy { ($0.properties.isWhitespace && $0 != "\u{85}") || $0 == "\u{FEFF}" }
    }
}

/// Turns every failure into a JSON answer. What a client sent is never a 500: a refusal is
/// 4xx with its reason; a database that is down is 503, saying so without its details; anything
/// else is a defect of the server's and answered 500 (never a client's input: tests hold to that).
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let logger: Logger

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let failure as APIFailure {
            return JSON.response(failure.body, status: failure.status)
        } catch let error as any HTTPResponseError {
            let status = error.status
            if status == .notFound, let allowed = OpenAPIDocument.methods(for: request.uri.path), !allowed.contains(request.method.rawValue) {
                var response = JSON.response(WireError("\(request.method) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))"),
                                             status: .methodNotAllowed)
                response.headers[.allow] = allowed.joined(separator: ", ")
                return response
            }
            let message = status == .notFound ? "no such route: \(request.method) \(request.uri.path)" : "\(status.reasonPhrase)"
            return JSON.response(WireError(message), status: status)
        } catch let error as Deadline.Exceeded {
            return databaseDown(request, error)
        } catch let error as PSQLError {
            return databaseDown(request, error)
        } catch let error as ConnectionPoolError {
            // No connection could be made (the pool's circuit breaker, a timeout): the database is away.
            return databaseDown(request, error)
        } catch {
            // Not the client's doing and not the database's: a defect of the server, said as one
            // rather than passed off as an outage.
            logger.error("\(request.method) \(request.uri.path): internal error: \(error)")
            return JSON.response(WireError("internal error; the server's log has the details"), status: .internalServerError)
        }
    }

    /// How long a client should wait before trying again when the database is away.
    static let retryAfter = 5

    private func databaseDown(_ request: Request, _ error: any Error) -> Response {
        logger.error("\(request.method) \(request.uri.path): the database failed: \(error)")
        let message = error is Deadline.Exceeded
            ? "the server's database did not answer in time; what was asked may or may not have been done: try again (with the same Idempotency-Key)"
            : "the server's database is unavailable; try again"
        var response = JSON.response(WireError(message), status: .serviceUnavailable)
        response.headers[.retryAfter] = String(Self.retryAfter)
        return response
    }
}

extension OpenAPIDocument {
    /// The document's paths as segments with their methods: a route that exists under another
    /// method answers 405 with `Allow`, not 404. The document is the route table's description,
    /// and the fuzz test holds the two to each other.
    private static let operations: [(segments: [Substring], methods: [String])] = {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let paths = object["paths"] as? [String: Any] else { return [] }
        return paths.map { path, operations in
            (path.split(separator: "/"), ((operations as? [String: Any])?.keys.map { $0.uppercased() } ?? []).sorted())
        }
    }()

    /// The methods of the path `path` is an instance of, or nil when it is none of the document's.
    static func methods(for path: String) -> [String]? {
        let parts = path.split(separator: "/")
        return operations.first { route in
            route.segments.count == parts.count && zip(route.segments, parts).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }?.methods
    }
}
