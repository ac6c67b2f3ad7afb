#if canImport(Glibc)
import Glibc
#endif
import CordonAgent
import CordonCore
import CordonLab
import CordonTelemetry
import Foundation
import Logging
import Prometheus
import Synchronization
import Testing

@Suite struct LogOutputTests {
    let date = Date(timeIntervalSince1970: 1_764_700_000.25)

    @Test func textUnderJournaldStartsWithThePriorityAndCarriesNoTime() {
        let handler = LogOutput(label: "cordon agent", format: .text, level: .info, journal: true)
        let line = handler.line(level: .warning, message: "guard restored the table", metadata: ["reason": "rule deleted", "count": "2"],
                                source: "CordonAgent", at: date)
        #expect(line == "<4>guard restored the table count=2 reason=\"rule deleted\"\n")
        #expect(handler.line(level: .critical, message: "x", metadata: [:], source: "", at: date).hasPrefix("<2>x"))
    }

    /// Priority prefixes only when standard error is the stream journald says it is.
    @Test func journaldIsRecognisedByItsStreamNotByTheVariableAlone() {
        var info = stat()
        #expect(fstat(2, &info) == 0)
        defer { unsetenv("JOURNAL_STREAM") }
        setenv("JOURNAL_STREAM", "\(info.st_dev):\(info.st_ino)", 1)
        #expect(LogOutput.underJournal)
        setenv("JOURNAL_STREAM", "\(info.st_dev):\(info.st_ino &+ 1)", 1)
        #expect(!LogOutput.underJournal, "inherited, but standard error went elsewhere")
        setenv("JOURNAL_STREAM", "garbage", 1)
        #expect(!LogOutput.underJournal)
    }

    @Test func textOnATerminalHasTimeLevelAndLabel() {
        let handler = LogOutput(label: "cordon agent", format: .text, level: .info, journal: false)
        let line = handler.line(level: .notice, message: "enforce by alice", metadata: [:], source: "", at: date)
        #expect(line.hasSuffix(" notice cordon agent: enforce by alice\n"))
        #expect(line.hasPrefix("2025-12-02T18:26:40.250Z"), "\(line)")
    }

    /// A message carrying a newline (an operator's reason, a peer's name) must not forge a line.
    @Test func aNewlineInAMessageStaysOnOneLine() {
        let handler = LogOutput(label: "l", format: .text, level: .info, journal: true)
        let line = handler.line(level: .info, message: "reason: a\n<3>forged", metadata: ["why": "b\nc"], source: "", at: date)
        #expect(line.filter { $0 == "\n" }.count == 1)
        #expect(line == "<6>reason: a\\n<3>forged why=\"b\\nc\"\n")
    }

    @Test func jsonIsOneObjectPerLineWithTheMetadataAsMembers() throws {
        let handler = LogOutput(label: "cordon-server", format: .json, level: .info)
        let line = handler.line(level: .error, message: "say \"hi\"\nagain", metadata: ["host": "h1", "message": "not this"],
                                source: "CordonServer", at: date)
        #expect(line.hasSuffix("}\n") && line.dropLast().contains("\n") == false)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["level"] == "error")
        #expect(object["label"] == "cordon-server")
        // The event's own fields win over metadata of the same name.
        #expect(object["message"] == "say \"hi\"\nagain")
        #expect(object["host"] == "h1")
        #expect(object["source"] == "CordonServer")
        #expect(object["time"] == "2025-12-02T18:26:40.250Z")
    }

    @Test func secretMetadataKeysAreNeverWritten() {
        for format in LogFormat.allCases {
            let handler = LogOutput(label: "l", format: format, level: .info, journal: true)
            let line = handler.line(level: .info, message: "enrolled", metadata: ["token": "cdn_abc", "secret": "s3cr3t", "password": "pw"],
                                    source: "", at: date)
            #expect(!line.contains("cdn_abc") && !line.contains("s3cr3t") && !line.contains("pw\""), "\(line)")
            #expect(line.contains("[redacted]"))
        }
    }

    @Test func levelsBelowTheThresholdAreDropped() {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "t") { label in
            LogOutput(label: label, format: .text, level: .notice, journal: true, sink: { line in lines.withLock { $0.append(line) } })
        }
        logger.info("quiet")
        logger.notice("loud", metadata: ["k": "v"])
        logger[metadataKey: "component"] = "guard"
        logger.error("louder")
        #expect(lines.withLock { $0 } == ["<5>loud k=v\n", "<3>louder component=guard\n"])
    }
}

/// The service manager's side of sd_notify(3): a datagram socket that reads what the notifier sends.
@Suite struct SystemdNotifierTests {
    @Test func readyStatusWatchdogAndStoppingReachTheManager() throws {
        let manager = try ServiceManagerSocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": manager.path])
        #expect(notifier.active)
        notifier.ready(status: "discovery (nothing blocked)")
        #expect(manager.receive() == "READY=1\nSTATUS=discovery (nothing blocked)\nMAINPID=\(getpid())")
        notifier.watchdog()
        #expect(manager.receive() == "WATCHDOG=1")
        notifier.status("ISOLATED;\nenforcing ruleset 3")
        #expect(manager.receive() == "STATUS=ISOLATED; enforcing ruleset 3")
        notifier.stopping(status: "stopping: flushing")
        #expect(manager.receive() == "STOPPING=1\nSTATUS=stopping: flushing")
    }

    @Test func anAbstractSocketIsReachedToo() throws {
        let manager = try ServiceManagerSocket(abstract: true)
        #expect(manager.path.hasPrefix("@") && !FileManager.default.fileExists(atPath: manager.path), "no file: the name is abstract")
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": manager.path])
        notifier.watchdog()
        #expect(manager.receive() == "WATCHDOG=1")
    }

    @Test func withoutASocketNothingIsSent() {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.active)
        #expect(!notifier.notify([("READY", "1")]))
        #expect(notifier.watchdogInterval == nil)
    }

    @Test func theWatchdogIsFedAtHalfItsTimeoutAndOnlyByTheProcessItNames() {
        #expect(SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000"]).watchdogInterval == 15)
        #expect(SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid())"]).watchdogInterval == 15)
        #expect(SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid() + 1)"]).watchdogInterval == nil)
        #expect(SystemdNotifier(environment: ["WATCHDOG_USEC": "0"]).watchdogInterval == nil)
    }
}

@Suite struct MetricsTests {
    @Test func addresses() throws {
        #expect(try MetricsAddress("127.0.0.1:9464") == .tcp(host: "127.0.0.1", port: 9464))
        #expect(try MetricsAddress("[::1]:9464") == .tcp(host: "::1", port: 9464))
        #expect(try MetricsAddress("[::1]:9464").description == "[::1]:9464")
        #expect(try MetricsAddress("unix:/run/cordon/metrics.sock") == .unix(path: "/run/cordon/metrics.sock"))
        for bad in ["9464", "localhost:", "::1:9464", "127.0.0.1:0", "127.0.0.1:70000", "unix:relative.sock", "unix:/" + String(repeating: "a", count: 120)] {
            #expect(throws: MetricsAddress.Invalid.self, "\(bad)") { try MetricsAddress(bad) }
        }
    }

    /// Counters that follow a total counted elsewhere only ever go up, by what the total grew.
    @Test func aMirroredCounterAddsWhatTheTotalGrewBy() {
        let registry = PrometheusCollectorRegistry()
        let counter = MirroredCounter(registry, "cordon_test_total", help: "A test.")
        counter.follow(5)
        counter.follow(5)
        counter.follow(12)
        #expect(registry.emitToString().contains("cordon_test_total 12\n"))
        // A total that went back (a component restarted) adds nothing until it passes 12 again.
        counter.follow(3)
        counter.follow(14)
        #expect(registry.emitToString().contains("cordon_test_total 14\n"))
        #expect(registry.emitToString().contains("# HELP cordon_test_total A test.\n# TYPE cordon_test_total counter\n"))
    }

    @Test func theAgentsMetricsFollowItsStatus() throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = AgentMetrics(registry: registry)
        var report = try JSONDecoder().decode(StatusReport.self, from: Data("""
            {"mode":"enforce","isolated":true,"flows":7,"events":100,"lost_events":2,"resyncs":2,"recovered_connections":5,
             "ignored_events":1,"flush_errors":0,"database":"d","backend":"nftables","pid":1,"started_at":"x","receive_buffer_bytes":1,
             "management":"m","rejected_inbound":3,"rejected_outbound":4,"lost_log_messages":0,
             "degraded":false,"guard_restores":0,"guard_escalations":0,"unrecorded":false,"releasing":false}
            """.utf8))
        report.guardRestores = 1
        var state = HostState()
        state.enforcement = EnforcementState(mode: .enforce, version: 3, confirmDeadline: 1_764_700_120)
        state.isolation = IsolationState(isolated: true, since: 1, operator: "alice", reason: "test")
        metrics.update(report, state: state)
        metrics.applied(in: .milliseconds(3), ok: true)
        metrics.flushed(in: .milliseconds(2))
        let text = registry.emitToString()
        for expected in ["cordon_conntrack_events_total 100\n", "cordon_conntrack_lost_events_total 2\n",
                         "cordon_rejected_packets_total{direction=\"inbound\"} 3\n", "cordon_rejected_packets_total{direction=\"outbound\"} 4\n",
                         "cordon_guard_restores_total 1\n", "cordon_flow_aggregates 7.0\n", "cordon_isolated 1.0\n", "cordon_enforcing 1.0\n",
                         "cordon_ruleset_version 3.0\n", "cordon_confirm_deadline_timestamp_seconds 1764700120.0\n",
                         "cordon_applies_total{outcome=\"ok\"} 1\n", "cordon_apply_duration_seconds_count 1\n",
                         "cordon_flush_duration_seconds_count 1\n"] {
            #expect(text.contains(expected), "\(expected) in\n\(text)")
        }
    }
}
