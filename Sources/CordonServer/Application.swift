import CordonTelemetry
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
    public var tokens: any TokenStore
    public var enrollment: any EnrollmentStore
    public var hosts: any HostStore
    public var desired: any DesiredStateStore
    public var log: any LogStore
    public var flows: any FleetFlowStore
    public var audit: any AuditStore
    public var policy: any PolicyStore
    public var rollouts: any RolloutStore
    public var sessions: any SessionStore

    public init(client: PostgresClient, logger: Logger) {
        tokens = PostgresTokenStore(client: client, logger: logger)
        enrollment = PostgresEnrollmentStore(client: client, logger: logger)
        hosts = PostgresHostStore(client: client, logger: logger)
        desired = PostgresDesiredStateStore(client: client, logger: logger)
        log = PostgresLogStore(client: client, logger: logger)
        flows = PostgresFleetFlowStore(client: client, logger: logger)
        audit = PostgresAuditStore(client: client, logger: logger)
        policy = PostgresPolicyStore(client: client, logger: logger)
        rollouts = PostgresRolloutStore(client: client, logger: logger)
        sessions = PostgresSessionStore(client: client, logger: logger)
    }

    /// Any implementations: the route tests run the controllers on stores kept in memory.
    public init(tokens: any TokenStore, enrollment: any EnrollmentStore, hosts: any HostStore, desired: any DesiredStateStore,
                log: any LogStore, flows: any FleetFlowStore, audit: any AuditStore, policy: any PolicyStore, rollouts: any RolloutStore,
                sessions: any SessionStore) {
        self.tokens = tokens
        self.enrollment = enrollment
        self.hosts = hosts
        self.desired = desired
        self.log = log
        self.flows = flows
        self.audit = audit
        self.policy = policy
        self.rollouts = rollouts
        self.sessions = sessions
    }
}

/// What `cordon-server run` needs.
public struct ServerSettings: Sendable {
    public var data: DataDirectory
    public var database: DatabaseURL
    public var host: String
    public var port: Int
    /// The Prometheus endpoint (plain HTTP: loopback or a unix socket); nil serves none.
    public var metrics: MetricsAddress?
    /// How long a request may wait on PostgreSQL before it is answered 503.
    public var databaseDeadline: DatabaseDeadline
    public var limits: ConnectionLimits

    public init(data: DataDirectory, database: DatabaseURL, host: String, port: Int, metrics: MetricsAddress? = nil,
                databaseDeadline: DatabaseDeadline = .init(), limits: ConnectionLimits = .init()) {
        self.data = data
        self.database = database
        self.host = host
        self.port = port
        self.metrics = metrics
        self.databaseDeadline = databaseDeadline
        self.limits = limits
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
        let listener = DesiredListener(client: client, waiters: waiters, logger: logger)
        let seen = SeenHosts(hosts: stores.hosts, logger: logger)
        let metrics = ServerMetrics()
        let deadline = { () -> DatabaseDeadline in
            var deadline = settings.databaseDeadline
            deadline.body = settings.limits.body
            return deadline
        }()
        let router = Self.router(stores: stores, waiters: waiters, seen: seen, metrics: metrics, deadline: deadline, logger: logger) {
            await ReadinessCheck.check(client: client, listener: listener, seconds: min(deadline.seconds, 2), logger: logger)
        }

        let certificate = try NIOSSLCertificate.fromPEMBytes(Array(try settings.data.read(settings.data.certificate).utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(try settings.data.read(settings.data.key).utf8), format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificate.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12

        var services: [any Service] = [client, listener, seen, RolloutDriver(stores: stores, logger: logger)]
        if let address = settings.metrics {
            services.append(MetricsEndpoint.application(at: address, refresh: { await metrics.refresh(stores: stores, client: client, logger: logger) },
                                                        logger: logger) { logger.notice("serving metrics on \(address)") })
        }
        var app = Application(
            router: router, server: .guardedTLS(tls, limits: settings.limits, peers: PeerCounts(limit: settings.limits.perAddress)),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "cordon-server"),
            services: services,
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? settings.port) },
            logger: logger)
        app.beforeServerStarts {
            let applied = try await Migrations.migrate(client, logger: logger)
            if !applied.isEmpty { logger.notice("database \(settings.database): applied migrations \(applied.joined(separator: ", "))") }
            let classified = try await PostgresFleetFlowStore(client: client, logger: logger).classifyUnclassified()
            if classified > 0 { logger.notice("database \(settings.database): placed \(classified) flow rows stored before the map's columns") }
            let restamped = try await Migrations.restamp(client, logger: logger)
            if restamped > 0 { logger.notice("database \(settings.database): \(restamped) rows stamped by another cluster's transactions (a restore?) stamped again") }
            // The map's rows and hosts read into memory beside serving, not before it: agents'
            // isolation must not wait on it. A map asked for meanwhile reads what is missing itself.
            if let flows = stores.flows as? PostgresFleetFlowStore {
                Task {
                    do {
                        let rows = try await flows.refreshMap()
                        let hosts = try await stores.hosts.mapHosts().count
                        logger.notice("map: \(rows) flow rows and \(hosts) hosts in memory")
                    } catch { logger.warning("map: rows not read ahead: \(error)") }
                }
            }
        }
        return app
    }

    /// The routes and their middleware, apart from how they are served: `build` serves them over
    /// TLS on PostgreSQL's stores, and the route tests call them in process on stores kept in
    /// memory, so that what a request is answered does not need a database, root or a network.
    /// `readiness` is `/readyz`'s check, which alone looks past the stores (at the pool and the
    /// notification channel).
    public static func router(stores: Stores, waiters: DesiredWaiters, seen: SeenHosts, metrics: ServerMetrics, deadline: DatabaseDeadline,
                              logger: Logger, readiness: @escaping @Sendable () async -> Readiness) -> Router<ServerContext> {
        let router = Router(context: ServerContext.self)
        // Outside the error middleware: it sees every answer, errors turned into responses included.
        router.add(middleware: RequestMetrics(metrics: metrics))
        router.add(middleware: ErrorMiddleware(logger: logger))
        // Liveness: the process answers. It never looks at the database, so a database outage
        // does not get every replica restarted at once.
        router.get("/healthz") { _, _ in JSON.response(["ok": true]) }
        // Readiness: this replica can do its work now, its database answering and its
        // notification channel listening; a load balancer sends it nothing while it cannot.
        router.get("/readyz") { _, _ in
            let answer = await readiness()
            var response = JSON.response(answer, status: answer.ready ? .ok : .serviceUnavailable)
            if !answer.ready { response.headers[.retryAfter] = String(ErrorMiddleware.retryAfter) }
            return response
        }
        router.get("/api/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        AgentController(stores: stores, waiters: waiters, seen: seen, metrics: metrics, deadline: deadline, logger: logger).addRoutes(to: router)
        let api = router.group("/api/v1").add(middleware: Authentication(tokens: stores.tokens, sessions: stores.sessions, accepts: .apiToken,
                                                                          deadline: deadline))
        SessionController(stores: stores, deadline: deadline).addRoutes(to: router, api: api)
        HostsController(stores: stores, deadline: deadline).addRoutes(to: api)
        IntentsController(stores: stores, deadline: deadline).addRoutes(to: api)
        RulesetsController(stores: stores, deadline: deadline).addRoutes(to: api)
        AssignmentsController(stores: stores, deadline: deadline).addRoutes(to: api)
        RolloutsController(stores: stores, deadline: deadline).addRoutes(to: api)
        MapController(stores: stores, deadline: deadline).addRoutes(to: api)
        EventsController(events: FleetEvents(stores: stores, logger: logger)).addRoutes(to: api)
        ConsoleController().addRoutes(to: router)
        return router
    }

    /// For the subcommands that only touch the database: runs `body` with a client and migrates first.
    public static func withDatabase<T: Sendable>(_ url: DatabaseURL, logger: Logger, _ body: @Sendable (Stores) async throws -> T) async throws -> T {
        // The pool's own warnings stay out of a one-shot command's output: it reports its own
        // failure, and the first query always races the pool's start (which PostgresNIO warns of).
        var background = logger
        background.logLevel = .error
        let client = PostgresClient(configuration: try url.configuration(), backgroundLogger: background)
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
