import ArgumentParser
import CordonServer
import CordonTelemetry
import Foundation
import Hummingbird
import Logging

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve agents and the API over HTTPS.",
        discussion: "Several replicas may run against one database; a change made on one reaches agents connected to another."
    )

    @OptionGroup var options: ServerOptions

    @Option(help: ArgumentHelp("Address and port to listen on, e.g. 0.0.0.0:8443 or [::]:8443.", valueName: "addr:port"))
    var listen: String

    @Option(help: ArgumentHelp("Serve Prometheus metrics over plain HTTP on a local address or unix socket (default off).",
                               valueName: "addr:port|unix:/path"))
    var metrics: String?

    @Option(name: .customLong("database-timeout"),
            help: ArgumentHelp("Answer 503 when a request's database work takes longer than this (default 5).", valueName: "seconds"))
    var databaseTimeout: Double = DatabaseDeadline.standard

    @Option(name: .customLong("max-connections-per-address"),
            help: ArgumentHelp("Connections one peer address may hold; more are closed on accept (default 64). Raise it for agents behind one NAT.",
                               valueName: "n"))
    var maxConnectionsPerAddress: Int = ConnectionLimits().perAddress

    @Option(name: .customLong("log-format"), help: ArgumentHelp("Log lines on stderr: text (journald-friendly) or json (default text).",
                                                               valueName: "text|json"))
    var logFormat: String = "text"

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Least level logged: \(Logger.Level.names) (default notice).", valueName: "level"))
    var logLevel: String = "notice"

    func validate() throws {
        _ = try address()
        if let metrics {
            do { _ = try MetricsAddress(metrics) } catch { throw ValidationError("--metrics \(error)") }
        }
        guard databaseTimeout >= 0.1, databaseTimeout <= 300 else { throw ValidationError("--database-timeout: expected 0.1-300 seconds") }
        guard maxConnectionsPerAddress >= 1 else { throw ValidationError("--max-connections-per-address: expected at least 1") }
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format '\(logFormat)': expected text or json") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level '\(logLevel)': expected one of \(Logger.Level.names)") }
    }

    func address() throws -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen '\(listen)': expected address:port, e.g. 0.0.0.0:8443")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("--listen '\(listen)': expected address:port") }
        return (host, port)
    }

    func run() async throws {
        let (host, port) = try address()
        let level = Logger.Level(rawValue: logLevel)!
        LogOutput.bootstrap(format: LogFormat(rawValue: logFormat)!, level: level)
        Telemetry.bootstrapMetrics()
        var logger = Logger(label: "cordon-server")
        logger.logLevel = level
        let settings = ServerSettings(data: options.directory, database: try options.databaseURL(), host: host, port: port,
                                      metrics: try metrics.map(MetricsAddress.init), databaseDeadline: DatabaseDeadline(seconds: databaseTimeout),
                                      limits: ConnectionLimits(perAddress: maxConnectionsPerAddress))
        let notifier = SystemdNotifier()
        do {
            let app = try await ServerApplication.build(settings, logger: logger) { [logger] port in
                logger.notice("serving https on \(host):\(port), database \(settings.database)")
                notifier.ready(status: "serving https on \(host):\(port)")
            }
            // The watchdog is fed from the same cooperative pool that answers requests: a pool
            // that no longer runs tasks stops feeding it.
            let watchdog = notifier.watchdogInterval.map { interval in
                Task {
                    while !Task.isCancelled {
                        notifier.watchdog()
                        try? await Task.sleep(for: .seconds(interval))
                    }
                }
            }
            defer { watchdog?.cancel() }
            try await app.runService()
            notifier.stopping(status: "stopped")
        } catch {
            throw ServerCLIError("cordon-server run: \(error)")
        }
    }
}
