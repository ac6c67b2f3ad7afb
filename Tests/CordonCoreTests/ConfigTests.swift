import CordonAgent
import CordonTelemetry
import Foundation
import Testing

@Suite struct ConfigTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "cordon-config-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func readsEverySetting() throws {
        let path = try write("database: /tmp/x.db\nsocket: /tmp/x.sock\nflush_interval: 0.5\nremote_cap: 64\nreceive_buffer_mib: 8\n")
        defer { unlink(path) }
        let config = try AgentConfig.load(path: path)
        #expect(config.database == "/tmp/x.db")
        #expect(config.socket == "/tmp/x.sock")
        #expect(config.flushInterval == 0.5)
        #expect(config.remoteCap == 64)
        #expect(config.receiveBufferMiB == 8)
    }

    @Test func readsTheManagementChannel() throws {
        let path = try write("""
            collectors: ["192.0.2.20:9000", "[2001:db8::20]:9000"]
            resolvers: [192.0.2.53]
            extra_allow: ["tcp/198.51.100.0/24:22"]
            log_group: 12
            """)
        defer { unlink(path) }
        let config = try AgentConfig.load(path: path)
        #expect(config.management.summary == "collector 192.0.2.20:9000, collector [2001:db8::20]:9000, resolver 192.0.2.53, extra tcp/198.51.100.0/24:22")
        #expect(config.logGroup == 12)
        #expect(config.effectiveManagement(resolvConf: "/nonexistent").resolvers.map(\.description) == ["192.0.2.53"])
    }

    @Test func readsTheOperationsSettingsAndRefusesBadOnesByLineAndField() throws {
        let path = try write("metrics: unix:/run/cordon/metrics.sock\nlog_format: json\nlog_level: warning\n")
        defer { unlink(path) }
        let config = try AgentConfig.load(path: path)
        #expect(config.metrics == .unix(path: "/run/cordon/metrics.sock"))
        #expect(config.logFormat == .json)
        #expect(config.logLevel == .warning)
        #expect(AgentConfig().metrics == nil, "off unless asked for")
        for (text, field) in [("socket: /tmp/s\nmetrics: 9464\n", "metrics"), ("socket: /tmp/s\nlog_format: xml\n", "log_format"),
                              ("socket: /tmp/s\nlog_level: loud\n", "log_level")] {
            let bad = try write(text)
            defer { unlink(bad) }
            #expect {
                try AgentConfig.load(path: bad)
            } throws: { error in
                (error as? ConfigError).map { $0.line == 2 && $0.field == field } ?? false
            }
        }
    }

    @Test func resolversDefaultToResolvConf() throws {
        let resolv = try write("nameserver 127.0.0.53\nnameserver 192.0.2.1\n")
        defer { unlink(resolv) }
        #expect(AgentConfig().effectiveManagement(resolvConf: resolv).resolvers.map(\.description) == ["192.0.2.1"])
    }

    @Test func aBadManagementEntryNamesLineFieldAndValue() throws {
        // A collector may be a name (issue 11), but not a wildcard.
        let path = try write("database: /tmp/x.db\ncollectors: [\"*.collector.example:9000\"]\n")
        defer { unlink(path) }
        let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        #expect(error.description.hasPrefix("\(path):2: collectors: '*.collector.example:9000': "), "\(error)")
    }

    @Test func errorsNameFileLineAndField() throws {
        let path = try write("database: /tmp/x.db\nremote_cap: lots\n")
        defer { unlink(path) }
        let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        #expect(error.file == path)
        #expect(error.line == 2)
        #expect(error.field == "remote_cap")
        #expect(error.description.contains("\(path):2: remote_cap"))
    }

    @Test("the fleet server from the config file (the packaged unit gives no flags), each flag replacing its key")
    func readsTheFleetServer() throws {
        let path = try write("server: https://cordon.example.com:8443\nserver_ca: /etc/cordon/ca.pem\nenroll_secret_file: /etc/cordon/enroll.secret\ntags: tier=web,env=prod\n")
        defer { unlink(path) }
        let files = try AgentConfig.load(path: path).fleetFiles
        #expect(files == FleetFiles(server: "https://cordon.example.com:8443", serverCA: "/etc/cordon/ca.pem",
                                    enrollSecretFile: "/etc/cordon/enroll.secret", tags: "tier=web,env=prod"))
        let merged = files.overridden(by: FleetFiles(server: "https://192.0.2.1:8443", tags: "tier=db"))
        #expect(merged == FleetFiles(server: "https://192.0.2.1:8443", serverCA: "/etc/cordon/ca.pem",
                                     enrollSecretFile: "/etc/cordon/enroll.secret", tags: "tier=db"))
        #expect(try AgentConfig.load(path: try write("log_level: info\n")).fleetFiles == FleetFiles(), "none: the host runs alone")
    }

    @Test("fleet settings that cannot work are errors by line and field", arguments: [
        ("server: http://cordon.example.com:8443\nserver_ca: /ca.pem\n", 1, "server", "https://HOST:PORT"),
        ("server: https://cordon.example.com:8443/api\nserver_ca: /ca.pem\n", 1, "server", "https://HOST:PORT"),
        ("log_level: info\nserver: https://cordon.example.com:8443\n", 2, "server", "needs server_ca"),
        ("log_level: info\nenroll_secret_file: /s\n", 2, "enroll_secret_file", "goes with server"),
        ("server: https://c.example:1\nserver_ca: /ca.pem\ntags: tier\n", 3, "tags", "key=value"),
        ("server: https://c.example:1\nserver_ca: ''\n", 2, "server_ca", "file path"),
    ])
    func badFleetSettings(text: String, line: Int, field: String, message: String) throws {
        let path = try write(text)
        defer { unlink(path) }
        let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        #expect(error.line == line && error.field == field && error.description.contains(message), "\(error)")
    }

    @Test func unknownSettingsAreErrors() throws {
        let path = try write("flush_intervall: 2\n")
        defer { unlink(path) }
        let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        #expect(error.field == "flush_intervall")
        #expect(error.message.contains("unknown setting"))
    }

    @Test("a setting given twice is an error, not last-one-wins (a second `collectors: []` would drop the collectors)")
    func duplicateSettingsAreErrors() throws {
        let path = try write("collectors: [\"192.0.2.20:9000\"]\nflush_interval: 1\ncollectors: []\n")
        defer { unlink(path) }
        let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        #expect(error.line == 3 && error.field == "collectors" && error.message.contains("given twice (first on line 1)"), "\(error)")
    }

    @Test("the management channel is as strict as a ruleset: host bits, signs, leading zeros and mapped addresses are errors")
    func managementEntriesAreStrict() throws {
        for (key, value, message) in [("extra_allow", "tcp/192.0.2.7/24:22", "did you mean 192.0.2.0/24"),
                                      ("extra_allow", "tcp/192.0.2.0/+24:22", "not an address or CIDR"),
                                      ("extra_allow", "tcp/192.0.2.0/24:+22", "expected ADDRESS"),
                                      ("collectors", "192.0.2.20:09000", "expected ADDRESS:PORT"),
                                      ("collectors", "[::ffff:192.0.2.20]:9000", "written as IPv6"),
                                      ("resolvers", "::ffff:192.0.2.53", "written as IPv6")] {
            let path = try write("\(key): [\"\(value)\"]\n")
            defer { unlink(path) }
            let error = try #require(throws: ConfigError.self) { try AgentConfig.load(path: path) }
            #expect(error.field == key && error.message.contains(message), "\(value): \(error)")
        }
    }

    @Test func outOfRangeValuesAreErrors() throws {
        let path = try write("flush_interval: 0\n")
        defer { unlink(path) }
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: path) }
    }
}

@Suite struct ControlProtocolTests {
    @Test("every command goes over the wire and back as itself, versioned")
    func roundTrip() throws {
        let commands: [ControlCommand] = [.status, .enforce(operator: "a", confirmWithin: 30), .confirm(operator: "a"),
                                          .discover(operator: "a", reason: "r"), .isolate(operator: "a", reason: "r"), .release(operator: "a", reason: "")]
        for command in commands {
            let data = try JSONEncoder().encode(ControlRequest(command))
            #expect(String(decoding: data, as: UTF8.self).contains(#""v":1"#))
            #expect(try ControlRequest.parse(data).get().command == command)
        }
        // An override of the server is said on the wire only when asked for; absent, it is not one.
        let override = try JSONEncoder().encode(ControlRequest(.discover(operator: "a", reason: "r"), overrideServer: true))
        #expect(try ControlRequest.parse(override).get().overrideServer)
        let plain = try JSONEncoder().encode(ControlRequest(.discover(operator: "a", reason: "r")))
        #expect(!String(decoding: plain, as: UTF8.self).contains("override_server"))
        #expect(try !ControlRequest.parse(plain).get().overrideServer)
    }

    @Test("unknown commands, other versions, missing operators and garbage are refused with a code")
    func refusals() {
        let cases = [(#"{"command":"reboot"}"#, "unknown_command"), (#"{"v":7,"command":"status"}"#, "unsupported_version"),
                     (#"{"command":"isolate","operator":" "}"#, "missing_field"), ("{", "malformed"), (#"{"v":1}"#, "malformed")]
        for (text, code) in cases {
            guard case .failure(let refusal) = ControlRequest.parse(Data(text.utf8)) else {
                Issue.record("\(text) was accepted")
                continue
            }
            #expect(refusal.code == code, "\(text): \(refusal)")
        }
        // The first releases sent no version: they are version 1.
        #expect((try? ControlRequest.parse(Data(#"{"command":"status"}"#.utf8)).get().command) == .status)
    }
}
