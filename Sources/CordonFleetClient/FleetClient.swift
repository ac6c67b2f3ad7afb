import AsyncHTTPClient
import CordonWire
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat
import NIOSSL

/// Why a call to the server did not succeed.
public enum FleetError: Error, CustomStringConvertible, Sendable {
    /// The server answered, and refused: its status and its JSON error.
    case refused(status: Int, WireError)
    /// No answer: not reachable, TLS refused, timed out.
    case unreachable(String)
    /// An answer that is not what the protocol says.
    case malformed(String)

    public var description: String {
        switch self {
        case .refused(let status, let error): return "the server refused (\(status)): \(error)"
        case .unreachable(let why): return "the server is not reachable: \(why)"
        case .malformed(let why): return "the server's answer is not understood: \(why)"
        }
    }

    /// The host's credential was revoked: retrying cannot help.
    public var isRevoked: Bool {
        // A server before 0.3.0 says so in words only.
        if case .refused(403, let error) = self { return error.code == .hostRevoked || (error.code == nil && error.error == "this host was revoked") }
        return false
    }
}

/// HTTPS to `cordon-server`, trusting its CA and nothing else. One for the agent's channel, one
/// for `cordon fleet`; each call carries the bearer credential it was made with.
public final class FleetClient: Sendable {
    public let server: URL
    private let credential: String?
    private let client: HTTPClient

    /// `server`: https://HOST:PORT. `caPEM`: the server's `ca.pem`.
    /// `connections`: at most this many open to the server at once (a load generator holding many
    /// long polls needs more than an agent's two).
    public init(server: URL, caPEM: String, credential: String?, connectTimeout: Double = 5, connections: Int = 8) throws {
        guard server.scheme == "https", server.host != nil else { throw FleetError.malformed("the server URL must be https://HOST:PORT") }
        self.server = server
        self.credential = credential
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        } catch {
            throw FleetError.malformed("the server CA is not a PEM certificate: \(error)")
        }
        tls.minimumTLSVersion = .tlsv12
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .milliseconds(Int64(connectTimeout * 1000))))
        configuration.httpVersion = .http1Only
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    deinit {
        try? client.syncShutdown()
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    /// One call: `body` as JSON, the answer decoded as `T`; a non-2xx answer is `.refused`.
    public func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none, headers: [(String, String)] = [],
                                   timeout: Double, as type: T.Type) async throws(FleetError) -> T {
        let data = try await raw(method, path, body: body.map { Wire.encode($0) }, headers: headers, timeout: timeout)
        do { return try Wire.decode(type, from: data) } catch {
            throw FleetError.malformed("\(path): \(Wire.describe(error).message)")
        }
    }

    /// The body of a 2xx answer.
    public func raw(_ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = [], timeout: Double) async throws(FleetError) -> Data {
        guard let url = URL(string: path, relativeTo: server) else { throw FleetError.malformed("bad path \(path)") }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        if let credential { request.headers.add(name: "Authorization", value: "Bearer \(credential)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        let buffer: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
            buffer = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw FleetError.unreachable(Self.describe(error))
        }
        let data = Data(buffer: buffer)
        guard (200..<300).contains(Int(response.status.code)) else {
            let error = (try? Wire.decode(WireError.self, from: data)) ?? WireError("HTTP \(response.status.code)")
            throw FleetError.refused(status: Int(response.status.code), error)
        }
        return data
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "timed out"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}
