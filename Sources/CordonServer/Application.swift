import CordonWire
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOSSL
import PostgresNIO
import ServiceLifecycle

/// The stores the controllers use, one per aggregate.
public struct Stores: Sendable {
    public var tokens: PostgresTokenStore
    public var enrollment: any EnrollmentStore
    public var hosts: any HostStore
    public var isolation: any IsolationStore
    public var log: any LogStore
    public var flows: any FleetFlowStore
    public var audit: any AuditStore

    public init(client: PostgresClient, logger: Logger) {
        tokens = PostgresTokenStore(client: client, logger: logger)
        enrollment = PostgresEnrollmentStore(client: client, logger: logger)
        hosts = PostgresHostStore(client: client, logger: logger)
        isolation = PostgresIsolationStore(client: client, logger: logger)
        log = PostgresLogStore(client: client, logger: logger)
        flows = PostgresFleetFlowStore(client: client, logger: logger)
        audit = PostgresAuditStore(client: client, logger: logger)
    }
}

/// What `cordon-server run` needs.
public struct ServerSettings: Sendable {
    public var data: DataDirectory
    public var database: DatabaseURL
    public var host: String
    public var port: Int

    public init(data: DataDirectory, database: DatabaseURL, host: String, port: Int) {
        self.data = data
        self.database = database
        self.host = host
        self.port = port
    }
}

/// Builds the server: the router with its controllers, HTTPS with the data directory's
/// certificate, and the services that run beside it (the database pool, the listener).
public enum ServerApplication {
    public static func build(_ settings: ServerSettings, logger: Logger,
                             onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> some ApplicationProtocol {
        let client = PostgresClient(configuration: try settings.database.configuration(), backgroundLogger: logger)
        let stores = Stores(client: client, logger: logger)
        let waiters = DesiredWaiters()
        let seen = SeenHosts(hosts: stores.hosts, logger: logger)
        let router = Router(context: ServerContext.self)
        router.add(middleware: ErrorMiddleware(logger: logger))
        router.get("/healthz") { _, _ in JSON.response(["ok": true]) }
        router.get("/api/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        AgentController(stores: stores, waiters: waiters, seen: seen, logger: logger).addRoutes(to: router)
        let api = router.group("/api/v1").add(middleware: Authentication(tokens: stores.tokens, accepts: .apiToken))
        HostsController(stores: stores).addRoutes(to: api)
        IntentsController(stores: stores).addRoutes(to: api)

        let certificate = try NIOSSLCertificate.fromPEMBytes(Array(try settings.data.read(settings.data.certificate).utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(try settings.data.read(settings.data.key).utf8), format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificate.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12

        var app = Application(
            router: router, server: try .tls(.http1(), tlsConfiguration: tls),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "cordon-server"),
            services: [client, DesiredListener(client: client, waiters: waiters, logger: logger), seen],
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? settings.port) },
            logger: logger)
        app.beforeServerStarts {
            let applied = try await Migrations.migrate(client, logger: logger)
            if !applied.isEmpty { logger.notice("database \(settings.database): applied migrations \(applied.joined(separator: ", "))") }
        }
        return app
    }

    /// For the subcommands that only touch the database: runs `body` with a client and migrates first.
    public static func withDatabase<T: Sendable>(_ url: DatabaseURL, logger: Logger, _ body: @Sendable (Stores) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: try url.configuration(), backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            defer { group.cancelAll() }
            try await Migrations.migrate(client, logger: logger)
            return try await body(Stores(client: client, logger: logger))
        }
    }
}
