import CordonCore
import CordonServer
import CordonWire
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging

/// The server's router on in-memory stores, called in process (no listener, no TLS), with a token
/// of each role made up front.
struct TestServer: Sendable {
    let db: MemoryDatabase
    let stores: Stores
    let client: any TestClientProtocol
    let admin: String
    let responder: String
    let viewer: String

    /// One answer: status, headers, the body as text and as a JSON object (empty when it is none).
    struct Reply {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var text: String
        var json: [String: Any]

        subscript(_ key: String) -> Any? { json[key] }
        var error: String? { json["error"] as? String }
        var field: String? { json["field"] as? String }
        var isolation: [String: Any]? { json["isolation"] as? [String: Any] }
        var items: [[String: Any]] { json["items"] as? [[String: Any]] ?? [] }
    }

    func call(_ method: HTTPRequest.Method, _ uri: String, token: String?, body: String? = nil, headers: HTTPFields = [:]) async throws -> Reply {
        var headers = headers
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let response = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        let text = String(buffer: response.body)
        let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        return Reply(status: response.status, headers: response.headers, text: text, json: json)
    }

    func get(_ uri: String, token: String?) async throws -> Reply { try await call(.get, uri, token: token) }

    func post(_ uri: String, token: String?, _ body: String, headers: HTTPFields = [:]) async throws -> Reply {
        try await call(.post, uri, token: token, body: body, headers: headers)
    }

    /// Enrolls a host through the route, as an agent does: its id and credential.
    func enroll(hostname: String = "web-1", machineID: String = UUID().uuidString, addresses: [String] = ["192.0.2.10"],
                tags: [String: String] = [:]) async throws -> (id: String, credential: String) {
        let secret = try await stores.enrollment.createSecret(tags: tags, ttlSeconds: nil, uses: nil, hostTags: true, extraWhitelist: [])
        let reply = try await post("/agent/v1/enroll", token: nil, Self.object([
            "secret": secret, "hostname": hostname, "machine_id": machineID, "addresses": addresses, "agent_version": "0.3.0", "tags": [String: String](),
        ]))
        guard reply.status == .created, let id = reply["host_id"] as? String, let credential = reply["credential"] as? String else {
            throw Failure("enrollment answered \(reply.status): \(reply.text)")
        }
        return (id, credential)
    }

    /// Asks for an isolation (or a release) as the responder.
    func isolate(_ host: String, _ state: String = "isolated", reason: String = "incident 42", key: String? = nil,
                 token: String? = nil) async throws -> Reply {
        var headers: HTTPFields = [:]
        if let key { headers[.init("Idempotency-Key")!] = key }
        return try await post("/api/v1/hosts/\(host)/isolation", token: token ?? responder, Self.object(["state": state, "reason": reason]),
                              headers: headers)
    }

    /// An agent's report, as JSON: `observed` in force, `applied` the generation it applied, and
    /// a local change (`state`, `operator`, `reason`, `at`, `sequence`) when there is one.
    static func report(observed: String = "released", applied: Int64 = 0, log: [Decision] = [], flows: [[String: Any]] = [],
                       local: [String: Any]? = nil) -> String {
        let status: [String: Any] = [
            "mode": "discovery", "isolated": observed == "isolated", "ruleset_version": NSNull(), "ruleset_digest": NSNull(),
            "lost_events": 0, "guard_restores": 0, "guard_escalations": 0, "flows": flows.count, "agent_version": "0.3.0",
            "addresses": ["192.0.2.10"],
        ]
        return object([
            "status": status, "observed": observed, "applied_generation": applied, "applied": NSNull(), "local": local.map { $0 as Any } ?? NSNull(),
            "log": log.map { try! JSONSerialization.jsonObject(with: Wire.encode($0)) }, "flows": flows,
        ])
    }

    /// A flow row as an agent sends it; `changes` replaces fields (to break one).
    static func flow(remote: String = "198.51.100.7", _ changes: [String: Any] = [:]) -> [String: Any] {
        let now = TimeText.rfc3339(TimeText.now())
        var row: [String: Any] = [
            "direction": "outbound", "protocol": "tcp", "family": "ipv4", "local_address": "192.0.2.10", "local_port": NSNull(),
            "remote_address": remote, "remote_port": 443, "icmp_type": NSNull(), "icmp_code": NSNull(), "connections": 1, "packets": 4,
            "bytes": 512, "first_seen": now, "last_seen": now, "verdict": "allowed", "remote_names": [String](),
        ]
        row.merge(changes) { $1 }
        return row
    }

    /// A decision-log entry whose hash and policy digest hold.
    static func decision(_ sequence: Int64, after previous: Decision? = nil) -> Decision {
        let policy = "version: 1\n"
        var entry = Decision(sequence: sequence, id: UUID().uuidString.lowercased(), action: "enforce", operator: "root", reason: "test",
                             backend: "nftables", policy: policy, policyDigest: ContentDigest.hex(policy), managementWhitelist: [], whitelist: "",
                             appliedAt: 1_800_000_000 + sequence, outcome: "applied", previousHash: previous?.hash ?? "", hash: "",
                             format: Decision.currentFormat)
        entry.hash = ContentDigest.hex(Decision.chained(entry))
        return entry
    }

    static func object(_ value: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `test` against a fresh server. `deadline` is the database deadline; `adjust` swaps a
/// store (one that hangs, say); `readiness` stands for the pool and listener checks.
func withServer(deadline: Double = DatabaseDeadline.standard,
                readiness: @escaping @Sendable () async -> Readiness = { Readiness(database: nil, notifications: nil) },
                adjust: (inout Stores) -> Void = { _ in },
                _ test: @escaping @Sendable (TestServer) async throws -> Void) async throws {
    var logger = Logger(label: "cordon-server-tests")
    logger.logLevel = .critical
    let waiters = DesiredWaiters()
    let db = MemoryDatabase(changed: { waiters.wake(host: $0) })
    let plain = db.stores()
    var stores = plain
    adjust(&stores)
    let router = ServerApplication.router(stores: stores, waiters: waiters, seen: SeenHosts(hosts: stores.hosts, logger: logger),
                                          metrics: ServerMetrics(), deadline: DatabaseDeadline(seconds: deadline), logger: logger,
                                          readiness: readiness)
    // Tokens are made on the in-memory stores even when a test swaps one for a store that hangs.
    let admin = try await plain.tokens.create(name: "alice", role: .admin).token
    let responder = try await plain.tokens.create(name: "rita", role: .responder).token
    let viewer = try await plain.tokens.create(name: "victor", role: .viewer).token
    let app = Application(router: router, logger: logger)
    try await app.test(.router) { client in
        try await test(TestServer(db: db, stores: plain, client: client, admin: admin, responder: responder, viewer: viewer))
    }
}
