import CordonTelemetry
import CordonWire
import Hummingbird
import Logging
import PostgresNIO
import Prometheus

/// The server's Prometheus metrics (names and meanings in Docs/operations.md). Requests and
/// uploads are counted as they happen; connected agents, intents and the database's round trip
/// are read from PostgreSQL at each scrape, so every replica reports the fleet's figures.
public final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let reports, reportFlows, reportLogEntries: Counter
    private let enrolled, connected, databaseRoundTrip, databaseUp: Gauge
    private let intents: [IntentStatus: Gauge]

    static let requestBuckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
                                             .seconds(2), .seconds(10), .seconds(30)]

    public init(registry: PrometheusCollectorRegistry = Telemetry.registry) {
        self.registry = registry
        reports = registry.makeCounter(name: "cordon_server_reports_total", help: "Agent reports (uploads) accepted.")
        reportFlows = registry.makeCounter(name: "cordon_server_report_flows_total", help: "Flow aggregates received in agent reports.")
        reportLogEntries = registry.makeCounter(name: "cordon_server_report_log_entries_total",
                                                help: "Decision-log entries received in agent reports.")
        enrolled = registry.makeGauge(name: "cordon_server_agents_enrolled", help: "Hosts enrolled and not revoked.")
        connected = registry.makeGauge(name: "cordon_server_agents_connected",
                                       help: "Enrolled hosts whose agent polled within the last 40 s, on any replica.")
        databaseRoundTrip = registry.makeGauge(name: "cordon_server_database_round_trip_seconds",
                                               help: "Time of a trivial query to PostgreSQL, measured at the scrape.")
        databaseUp = registry.makeGauge(name: "cordon_server_database_up", help: "1 when PostgreSQL answered the scrape's query.")
        intents = Dictionary(uniqueKeysWithValues: IntentStatus.allCases.map { status in
            (status, registry.makeGauge(name: "cordon_server_intents", labels: [("status", status.rawValue)],
                                        help: "Isolation intents by status (pending ones are waiting for their agent)."))
        })
    }

    func reported(flows: Int, logEntries: Int) {
        reports.increment()
        reportFlows.increment(by: Int64(flows))
        reportLogEntries.increment(by: Int64(logEntries))
    }

    /// A label set per route, method and status: made on first use, then found again.
    func requested(route: String, method: String, status: Int, duration: Duration) {
        let labels = [("route", route), ("method", method), ("status", "\(status)")]
        registry.makeCounter(name: "cordon_server_http_requests_total", labels: labels,
                             help: "HTTP requests answered, by route (the pattern, not the path), method and status.").increment()
        registry.makeDurationHistogram(name: "cordon_server_http_request_duration_seconds", labels: [("route", route)],
                                       buckets: Self.requestBuckets, help: "Time to answer an HTTP request, by route.").record(duration)
    }

    /// Reads the fleet's figures; PostgreSQL being down shows as `cordon_server_database_up 0`,
    /// not as a failed scrape.
    func refresh(stores: Stores, client: PostgresClient, logger: Logger) async {
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try await client.query("SELECT 1", logger: logger)
            databaseRoundTrip.set((clock.now - started).seconds)
            databaseUp.set(1.0)
            let hosts = try await stores.hosts.counts()
            enrolled.set(Double(hosts.enrolled))
            connected.set(Double(hosts.connected))
            let byStatus = try await stores.desired.intentCounts()
            for (status, gauge) in intents { gauge.set(Double(byStatus[status] ?? 0)) }
        } catch {
            databaseUp.set(0.0)
            logger.warning("metrics: the database did not answer: \(String(reflecting: error))")
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Counts every request by its route pattern (`/api/v1/hosts/{id}`), so that host ids do not
/// become label values.
struct RequestMetrics<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let started = clock.now
        do {
            let response = try await next(request, context)
            record(request, context, status: Int(response.status.code), since: started, clock)
            return response
        } catch let error as any HTTPResponseError {
            record(request, context, status: Int(error.status.code), since: started, clock)
            throw error
        } catch {
            record(request, context, status: 500, since: started, clock)
            throw error
        }
    }

    private func record(_ request: Request, _ context: Context, status: Int, since started: ContinuousClock.Instant, _ clock: ContinuousClock) {
        let route = context.endpointPath ?? "unmatched"
        metrics.requested(route: route, method: request.method.rawValue, status: status, duration: clock.now - started)
    }
}
