import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// Where a Prometheus endpoint listens: a local address (`127.0.0.1:9464`, `[::1]:9464`) or a
/// unix socket (`unix:/run/cordon/metrics.sock`, for a local proxy or a node agent).
public enum MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String) throws {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/"), path.utf8.count < 108 else {
                throw Invalid(description: "'\(text)': a unix socket needs an absolute path under 108 bytes, e.g. unix:/run/cordon/metrics.sock")
            }
            self = .unix(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw Invalid(description: "'\(text)': expected address:port (127.0.0.1:9464, [::1]:9464) or unix:/path")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(":") || text.hasPrefix("[") else {
            throw Invalid(description: "'\(text)': expected address:port; an IPv6 address goes in brackets, [::1]:9464")
        }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    var bindAddress: BindAddress {
        switch self {
        case .tcp(let host, let port): .hostname(host, port: port)
        case .unix(let path): .unixDomainSocket(path: path)
        }
    }
}

/// The process's metrics: one swift-prometheus registry that Cordon's own metrics are made on
/// (with their HELP text, the documentation Prometheus shows), and that swift-metrics is
/// bootstrapped to, so that what libraries report through swift-metrics lands beside them.
public enum Telemetry {
    public static let registry = PrometheusCollectorRegistry()

    /// Once per process, before any library makes a swift-metrics handler.
    public static func bootstrapMetrics() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }
}

/// An HTTP listener that answers `GET /metrics` in Prometheus' text format (and nothing else).
/// It is plain HTTP on purpose: it is meant for loopback or a unix socket, never for the
/// network the agents' TLS channel crosses.
public enum MetricsEndpoint {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// - Parameter refresh: brings the registry up to date just before each scrape (the gauges
    ///   and counters that mirror state held elsewhere).
    public static func application(at address: MetricsAddress, registry: PrometheusCollectorRegistry = Telemetry.registry,
                                   refresh: @escaping @Sendable () async -> Void, logger: Logger,
                                   onRunning: @escaping @Sendable () async -> Void = {}) -> some ApplicationProtocol {
        if case .unix(let path) = address { removeStaleSocket(path) }
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            await refresh()
            var buffer = ByteBuffer()
            buffer.writeBytes(registry.emitToBuffer())
            return Response(status: .ok, headers: [.contentType: contentType], body: .init(byteBuffer: buffer))
        }
        return Application(router: router, configuration: .init(address: address.bindAddress, serverName: "cordon-metrics"),
                           onServerRunning: { _ in
                               // Root only: the counters tell what a host talks to.
                               if case .unix(let path) = address { chmod(path, 0o600) }
                               await onRunning()
                           },
                           logger: logger)
    }

    /// A socket file left by a killed process would make the bind fail; anything that is not a
    /// socket is left alone (and the bind fails, saying so).
    private static func removeStaleSocket(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return }
        unlink(path)
    }
}

/// A Prometheus counter that follows a total counted elsewhere (the agent's status counters):
/// each scrape adds what the total grew by. A total that went down (a restarted component)
/// adds nothing until it passes the last value, so the counter never decreases.
public final class MirroredCounter: Sendable {
    private let counter: Prometheus.Counter
    private let last = Mutex<UInt64>(0)

    public init(_ registry: PrometheusCollectorRegistry, _ name: String, labels: [(String, String)] = [], help: String) {
        counter = registry.makeCounter(name: name, labels: labels, help: help)
    }

    public func follow(_ total: UInt64) {
        let delta = last.withLock { last -> UInt64 in
            guard total > last else { return 0 }
            defer { last = total }
            return total - last
        }
        if delta > 0 { counter.increment(by: Int64(clamping: delta)) }
    }
}

/// The endpoint run beside a program that is not itself async (the agent): its own service group,
/// shut down gracefully at stop, so that a stop is not logged as a failure of the listener.
public final class MetricsServer: Sendable {
    private let group: ServiceGroup
    private let done = DispatchSemaphore(value: 0)

    public init(at address: MetricsAddress, refresh: @escaping @Sendable () async -> Void, logger: Logger) {
        let app = MetricsEndpoint.application(at: address, refresh: refresh, logger: logger) {
            logger.notice("serving metrics on \(address)")
        }
        group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        Task { [group, done] in
            do { try await group.run() } catch {
                logger.error("metrics endpoint \(address) failed: \(error)")
            }
            done.signal()
        }
    }

    /// Waits up to `timeout` seconds for the listener to close.
    public func stop(timeout: Double = 2) {
        Task { [group] in await group.triggerGracefulShutdown() }
        _ = done.wait(timeout: .now() + timeout)
    }
}
