import CordonCore
import CordonTelemetry
import CordonWire
import Foundation
import Logging
import Yams

/// Settings of the agent. Precedence: command-line flag, then config file, then the default here.
public struct AgentConfig: Sendable, Equatable {
    public static let defaultDatabase = "/var/lib/cordon/cordon.db"
    public static let defaultSocket = "/run/cordon/cordon.sock"

    public var database = AgentConfig.defaultDatabase
    public var socket = AgentConfig.defaultSocket
    /// Seconds between flushes of the in-memory aggregates to SQLite.
    public var flushInterval: Double = 2
    /// Distinct remotes per (direction, protocol, port) before new ones roll up into prefixes.
    public var remoteCap = 1024
    /// Kernel receive buffer for conntrack events, in MiB.
    public var receiveBufferMiB = 128
    /// Always allowed while enforcing; the only traffic while isolated. Without configured
    /// resolvers, the nameservers of /etc/resolv.conf at the time of each apply are used.
    public var management = ManagementChannel()
    /// NFLOG group of the enforcement table's refused packets (one reader per group and namespace).
    public var logGroup: UInt16 = CordonTables.defaultLogGroup
    /// Bounds of the names learned from DNS answers (config keys `names_per_address`,
    /// `addresses_per_name`, `names_max`).
    public var nameLimits = NameTable.Limits()

    /// The Prometheus endpoint (`metrics: 127.0.0.1:9464` or `unix:/run/cordon/metrics.sock`); off
    /// when nil, the default: what a host talks to is not published unless someone asks.
    public var metrics: MetricsAddress?
    /// Log lines: `text` (journald-friendly) or `json`, and the least level written.
    public var logFormat = LogFormat.text
    public var logLevel = Logger.Level.info

    /// The fleet server as the config file names it (`server`, `server_ca`, `enroll_secret_file`,
    /// `tags`), read into `fleet` at the start: the packaged unit runs `cordon agent --config`
    /// alone, and a host enrolls without a drop-in that overrides its command line.
    public var fleetFiles = FleetFiles()
    /// The fleet server to enroll with and report to (`--server`); nil runs the host alone.
    public var fleet: FleetSettings?
    /// The fleet server's addresses, resolved once at start: collectors like the configured ones.
    public var fleetEndpoints: [ManagementChannel.Endpoint] = []

    public init() {}

    /// The management channel to install now: resolvers from resolv.conf when none are configured,
    /// the fleet server among the collectors.
    /// - Parameter named: the addresses the collectors given by name resolve to now.
    public func effectiveManagement(resolvConf: String = "/etc/resolv.conf",
                                    named: [ManagementChannel.NamedCollector: [IPAddress]] = [:]) -> ManagementChannel {
        var channel = management
        for endpoint in fleetEndpoints where !channel.collectors.contains(endpoint) { channel.collectors.append(endpoint) }
        for collector in channel.collectorNames {
            for address in named[collector] ?? [] {
                let endpoint = ManagementChannel.Endpoint(transport: IPProtocolNumber.tcp, addresses: IPPrefix(address), port: collector.port)
                if !channel.collectors.contains(endpoint) { channel.collectors.append(endpoint) }
            }
        }
        if channel.resolvers.isEmpty, let text = try? String(contentsOfFile: resolvConf, encoding: .utf8) {
            channel.resolvers = Review.resolvers(resolvConf: text)
        }
        return channel
    }

    /// Limits that keep a typo in a config file from producing an agent that cannot work.
    public static let flushIntervalRange: ClosedRange<Double> = 0.1...3600
    public static let remoteCapRange: ClosedRange<Int> = 1...1_000_000
    public static let receiveBufferRange: ClosedRange<Int> = 1...2048
    public static let nameLimitRange: ClosedRange<Int> = 1...10_000_000

    /// Reads a YAML config file; unknown keys and out-of-range values are errors that name the
    /// file, the line and the key.
    public static func load(path: String) throws -> AgentConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, line: nil, field: nil, message: "cannot read: \(error.localizedDescription)")
        }
        if let (line, _) = YAMLDepth.firstTooDeep(text) {
            throw ConfigError(file: path, line: line, field: nil, message: "nested deeper than \(YAMLDepth.limit) levels; a config needs two")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError(file: path, line: nil, field: nil, message: "not valid YAML: \(error)")
        }
        var config = AgentConfig()
        guard let node else { return config }
        guard let mapping = node.mapping else {
            throw ConfigError(file: path, line: node.mark.map { $0.line }, field: nil, message: "expected a mapping of settings")
        }
        var seen: [String: Int] = [:]
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            let line = keyNode.mark.map { $0.line }
            func fail(_ message: String) -> ConfigError { ConfigError(file: path, line: line, field: key, message: message) }
            // Last-one-wins would let a second `collectors: []` silently drop the collectors.
            if let first = seen[key] { throw fail("given twice (first on line \(first))") }
            seen[key] = line ?? 0
            switch key {
            case "database":
                guard let v = value.string, !v.isEmpty else { throw fail("expected a file path") }
                config.database = v
            case "socket":
                guard let v = value.string, !v.isEmpty else { throw fail("expected a file path") }
                config.socket = v
            case "flush_interval":
                guard let v = value.float, flushIntervalRange.contains(v) else {
                    throw fail("expected seconds between \(flushIntervalRange.lowerBound) and \(flushIntervalRange.upperBound)")
                }
                config.flushInterval = v
            case "remote_cap":
                guard let v = value.int, remoteCapRange.contains(v) else {
                    throw fail("expected an integer between \(remoteCapRange.lowerBound) and \(remoteCapRange.upperBound)")
                }
                config.remoteCap = v
            case "collectors", "resolvers", "extra_allow":
                guard let items = value.sequence?.map({ $0.string }), !items.contains(nil) else {
                    throw fail("expected a list of strings")
                }
                do {
                    switch key {
                    case "collectors":
                        let targets = try items.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.collectorTarget(text!) }
                        (config.management.collectors, config.management.collectorNames) = ManagementChannel.split(targets)
                    case "resolvers": config.management.resolvers = try items.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.resolver(text!) }
                    default: config.management.extra = try items.map { text throws(ManagementChannel.ParseError) in try ManagementChannel.extra(text!) }
                    }
                } catch {
                    throw fail("'\(error.value)': \(error.message)")
                }
            case "log_group":
                guard let v = value.int, let group = UInt16(exactly: v) else { throw fail("expected an NFLOG group 0-65535") }
                config.logGroup = group
            case "addresses_per_name", "names_per_address", "names_max":
                guard let v = value.int, nameLimitRange.contains(v) else {
                    throw fail("expected an integer between \(nameLimitRange.lowerBound) and \(nameLimitRange.upperBound)")
                }
                switch key {
                case "addresses_per_name": config.nameLimits.addressesPerName = v
                case "names_per_address": config.nameLimits.namesPerAddress = v
                default: config.nameLimits.names = v
                }
            case "receive_buffer_mib":
                guard let v = value.int, receiveBufferRange.contains(v) else {
                    throw fail("expected MiB between \(receiveBufferRange.lowerBound) and \(receiveBufferRange.upperBound)")
                }
                config.receiveBufferMiB = v
            case "metrics":
                guard let v = value.string else { throw fail("expected address:port or unix:/path") }
                do { config.metrics = try MetricsAddress(v) } catch { throw fail("\(error)") }
            case "log_format":
                guard let v = value.string.flatMap(LogFormat.init(rawValue:)) else {
                    throw fail("expected one of \(LogFormat.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                config.logFormat = v
            case "log_level":
                guard let v = value.string.flatMap(Logger.Level.init(rawValue:)) else { throw fail("expected one of \(Logger.Level.names)") }
                config.logLevel = v
            case "server":
                guard let v = value.string, FleetFiles.serverURL(v) != nil else { throw fail("expected https://HOST:PORT") }
                config.fleetFiles.server = v
            case "server_ca", "enroll_secret_file":
                guard let v = value.string, !v.isEmpty else { throw fail("expected a file path") }
                if key == "server_ca" { config.fleetFiles.serverCA = v } else { config.fleetFiles.enrollSecretFile = v }
            case "tags":
                guard let v = value.string else { throw fail("expected k=v,...") }
                do { _ = try Tags.parse(v) } catch { throw fail("\(error)") }
                config.fleetFiles.tags = v
            default:
                throw fail("unknown setting; valid: database, socket, flush_interval, remote_cap, receive_buffer_mib, collectors, resolvers, extra_allow, log_group, addresses_per_name, names_per_address, names_max, metrics, log_format, log_level, server, server_ca, enroll_secret_file, tags")
            }
        }
        // The fleet settings belong together: a CA or a secret without a server is a half-done edit.
        if config.fleetFiles.server == nil, let stray = ["server_ca", "enroll_secret_file", "tags"].first(where: { seen[$0] != nil }) {
            throw ConfigError(file: path, line: seen[stray], field: stray, message: "goes with server: (no server is set)")
        }
        if config.fleetFiles.server != nil, config.fleetFiles.serverCA == nil {
            throw ConfigError(file: path, line: seen["server"], field: "server", message: "needs server_ca: (the server's ca.pem)")
        }
        return config
    }
}

/// The fleet settings by file name and text, as the config file or the command line gives them.
public struct FleetFiles: Sendable, Equatable {
    public var server: String?
    public var serverCA: String?
    public var enrollSecretFile: String?
    public var tags: String?

    public init(server: String? = nil, serverCA: String? = nil, enrollSecretFile: String? = nil, tags: String? = nil) {
        self.server = server
        self.serverCA = serverCA
        self.enrollSecretFile = enrollSecretFile
        self.tags = tags
    }

    /// The server's address when it is one an agent can use: https, a host, no path.
    public static func serverURL(_ text: String) -> URL? {
        guard let url = URL(string: text), url.scheme == "https", url.host != nil, url.path.isEmpty || url.path == "/" else { return nil }
        return url
    }

    /// Each setting the command line gives replaces the config file's.
    public func overridden(by flags: FleetFiles) -> FleetFiles {
        FleetFiles(server: flags.server ?? server, serverCA: flags.serverCA ?? serverCA,
                   enrollSecretFile: flags.enrollSecretFile ?? enrollSecretFile, tags: flags.tags ?? tags)
    }
}

/// A config file problem, located.
public struct ConfigError: Error, CustomStringConvertible {
    public let file: String
    /// 1-based.
    public let line: Int?
    public let field: String?
    public let message: String

    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let field { location += ": \(field)" }
        return "\(location): \(message)"
    }
}
