#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Synchronization

/// How the agent and the server write their log lines to standard error.
public enum LogFormat: String, CaseIterable, Sendable {
    /// One line per message. Under systemd (`JOURNAL_STREAM` set) it starts with the syslog
    /// priority (`<4>`) and carries no time, which journald adds; elsewhere with an RFC 3339 time
    /// and the level.
    case text
    /// One JSON object per line, for log shippers: `time`, `level`, `label`, `message`, `source`
    /// and the metadata as string members.
    case json
}

/// A swift-log handler for both formats. Writes whole lines with one `write(2)` each, so that
/// lines from several threads never interleave.
public struct LogOutput: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: LogFormat
    private let journal: Bool
    private let sink: @Sendable (String) -> Void

    /// Metadata keys whose values are never written, whatever a caller passes: a safety net under
    /// the rule that no secret is logged at all.
    public static let redactedKeys: Set<String> = ["token", "secret", "password", "authorization", "key", "enrollment_secret"]

    public init(label: String, format: LogFormat, level: Logger.Level, journal: Bool = LogOutput.underJournal,
                sink: @escaping @Sendable (String) -> Void = LogOutput.standardError) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.journal = journal
        self.sink = sink
    }

    /// journald connects standard error itself and says so in `JOURNAL_STREAM` (`device:inode`).
    /// A child that inherited the variable but writes elsewhere (a redirect to a file) must not
    /// get priority prefixes, so the stream is compared with what standard error is.
    public static var underJournal: Bool {
        guard let value = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        var info = stat()
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]), fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// Installs the handler for every logger of the process. Call once, before the first logger.
    public static func bootstrap(format: LogFormat, level: Logger.Level) {
        LoggingSystem.bootstrap { label in LogOutput(label: label, format: format, level: level) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        sink(line(level: event.level, message: "\(event.message)", metadata: merged, source: event.source, at: Date()))
    }

    /// The line for one event; separate from `log` so that tests read it without a process.
    public func line(level: Logger.Level, message: String, metadata: Logger.Metadata, source: String, at date: Date) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { ($0.key, Self.redactedKeys.contains($0.key) ? "[redacted]" : "\($0.value)") }
        switch format {
        case .json:
            var object: [String: String] = ["time": Self.timestamp(date), "level": level.rawValue, "label": label,
                                            "message": message, "source": source]
            for (key, value) in fields where object[key] == nil { object[key] = value }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return String(decoding: data, as: UTF8.self) + "\n"
        case .text:
            let rendered = fields.map { " \($0.0)=\(Self.quoted($0.1))" }.joined()
            // One line per event: a newline inside a message would start a forged line.
            let flat = message.replacingOccurrences(of: "\n", with: "\\n")
            if journal { return "<\(Self.priority(level))>\(flat)\(rendered)\n" }
            return "\(Self.timestamp(date)) \(level.rawValue) \(label): \(flat)\(rendered)\n"
        }
    }

    /// syslog priorities, as sd-daemon(3) prefixes read them.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func quoted(_ value: String) -> String {
        guard value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

extension Logger.Level {
    /// The names `--log-level` takes.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
