import ArgumentParser
import CordonAgent
import CordonCore
import Foundation
import CordonTelemetry
import CordonWire
import Logging

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the agent in the foreground: record flows, and enforce when told to.",
        discussion: """
            Starts in the mode the database last recorded (discovery on first start) and reconciles the \
            kernel with it. Stops on SIGTERM or SIGINT after flushing everything to the database; an \
            enforced ruleset stays in the kernel (fail-closed), an unconfirmed one is rolled back first.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("YAML config file (see Docs/operations.md for its keys).", valueName: "file"))
    var config: String?

    @Option(name: .customLong("collector"), help: ArgumentHelp(
        "Management collector, always reachable over TCP and checked after enforce (repeatable); by address or by name.", valueName: "host:port"))
    var collectors: [String] = []

    @Option(name: .customLong("resolver"), help: ArgumentHelp(
        "DNS resolver always reachable on port 53 (repeatable; default: the nameservers of /etc/resolv.conf).", valueName: "ip"))
    var resolvers: [String] = []

    @Option(name: .customLong("extra-allow"), help: ArgumentHelp(
        "Extra whitelist entry, allowed both ways (repeatable), e.g. tcp/192.0.2.0/24:443 or udp/[2001:db8::1]:514.",
        valueName: "proto/address[:port]"))
    var extraAllow: [String] = []

    @Option(help: ArgumentHelp("Seconds between writes to the database (default 2).", valueName: "seconds"))
    var flushInterval: Double?

    @Option(help: ArgumentHelp("The fleet server to enroll with and report to; its address becomes part of the management channel.",
                               valueName: "https://host:port"))
    var server: String?

    @Option(name: .customLong("server-ca"), help: ArgumentHelp("The server's CA certificate (its ca.pem): the only one trusted.", valueName: "file"))
    var serverCA: String?

    @Option(name: .customLong("enroll-secret-file"), help: ArgumentHelp(
        "File holding an enrollment secret (`cordon-server enroll-secret create`); needed on the first start only.", valueName: "file"))
    var enrollSecretFile: String?

    @Option(help: ArgumentHelp("Tags this host asks for at enrollment (the secret's own tags win).", valueName: "k=v,..."))
    var tags: String?

    @Option(help: ArgumentHelp("Serve Prometheus metrics on a local address or unix socket (config key `metrics`; default off).",
                               valueName: "addr:port|unix:/path"))
    var metrics: String?

    @Option(name: .customLong("log-format"), help: ArgumentHelp("Log lines on stderr: text (journald-friendly) or json (default text).",
                                                               valueName: "text|json"))
    var logFormat: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Least level logged: \(Logger.Level.names) (default info).", valueName: "level"))
    var logLevel: String?

    func validate() throws {
        _ = try managementOverrides()
        if let metrics {
            do { _ = try MetricsAddress(metrics) } catch { throw ValidationError("--metrics \(error)") }
        }
        if let logFormat, LogFormat(rawValue: logFormat) == nil { throw ValidationError("--log-format '\(logFormat)': expected text or json") }
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level '\(logLevel)': expected one of \(Logger.Level.names)")
        }
        // Whether --server-ca and the rest have a server to go with is known once the config
        // file is read (`run`): its `server:` counts.
        if let server, FleetFiles.serverURL(server) == nil {
            throw ValidationError("--server '\(server)': expected https://HOST:PORT")
        }
        if let tags {
            do { _ = try Tags.parse(tags) } catch { throw ValidationError("--\(error)") }
        }
        if let flushInterval, !AgentConfig.flushIntervalRange.contains(flushInterval) {
            throw ValidationError("--flush-interval must be between \(AgentConfig.flushIntervalRange.lowerBound) and \(AgentConfig.flushIntervalRange.upperBound) seconds")
        }
    }

    func run() throws {
        var settings = AgentConfig()
        if let config {
            do { settings = try AgentConfig.load(path: config) } catch let error as ConfigError {
                throw CLIError.invalid(error.description)
            }
        }
        if let db = global.db { settings.database = db }
        if let socket = global.socket { settings.socket = socket }
        if let flushInterval { settings.flushInterval = flushInterval }
        if let metrics { settings.metrics = try MetricsAddress(metrics) }
        if let logFormat { settings.logFormat = LogFormat(rawValue: logFormat)! }
        if let logLevel { settings.logLevel = Logger.Level(rawValue: logLevel)! }
        LogOutput.bootstrap(format: settings.logFormat, level: settings.logLevel)
        Telemetry.bootstrapMetrics()
        // A list on the command line replaces the config file's list of the same kind.
        let overrides = try managementOverrides()
        if !collectors.isEmpty {
            settings.management.collectors = overrides.collectors
            settings.management.collectorNames = overrides.collectorNames
        }
        if !resolvers.isEmpty { settings.management.resolvers = overrides.resolvers }
        if !extraAllow.isEmpty { settings.management.extra = overrides.extra }

        let files = settings.fleetFiles.overridden(by: FleetFiles(server: server, serverCA: serverCA, enrollSecretFile: enrollSecretFile, tags: tags))
        if files.server == nil, files.serverCA != nil || files.enrollSecretFile != nil || files.tags != nil {
            throw CLIError.invalid("--server-ca, --enroll-secret-file and --tags go with --server (or server: in the config file)")
        }
        if let server = files.server {
            guard let serverCA = files.serverCA else { throw CLIError.invalid("--server needs --server-ca FILE (the server's ca.pem)") }
            let ca: String
            var secret: String?
            do {
                ca = try String(contentsOfFile: serverCA, encoding: .utf8)
                secret = try files.enrollSecretFile.map { try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }
            } catch {
                throw CLIError.invalid("\((error as NSError).localizedDescription)")
            }
            if secret?.isEmpty == true { secret = nil }
            let fleet = FleetSettings(server: FleetFiles.serverURL(server)!, caPEM: ca, enrollSecret: secret, tags: try files.tags.map(Tags.parse) ?? [:])
            settings.fleet = fleet
            settings.fleetEndpoints = fleet.endpoints()
            guard !settings.fleetEndpoints.isEmpty else { throw CLIError.invalid("server: cannot resolve \(server)") }
        }
        let agent = Agent(config: settings, logger: Logger(label: "cordon agent"))
        do {
            try agent.run()
        } catch {
            throw CLIError.failed("agent: \(error)")
        }
    }

    private func managementOverrides() throws -> ManagementChannel {
        do {
            let (byAddress, byName) = ManagementChannel.split(
                try collectors.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.collectorTarget(text) })
            var channel = ManagementChannel(
                collectors: byAddress,
                resolvers: try resolvers.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.resolver(text) },
                extra: try extraAllow.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.extra(text) })
            channel.collectorNames = byName
            return channel
        } catch {
            throw ValidationError(error.description)
        }
    }
}
