#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import CordonTelemetry
import Foundation
import Synchronization

/// What `cordon status` reports.
public struct StatusReport: Codable, Sendable, Equatable {
    public var mode: String
    public var isolated: Bool
    /// Flow aggregates held in memory (and on disk after the next flush).
    public var flows: Int
    public var events: UInt64
    public var lostEvents: UInt64
    public var resyncs: UInt64
    public var recoveredConnections: UInt64
    public var ignoredEvents: UInt64
    public var flushErrors: UInt64
    public var lastFlush: String?
    public var database: String
    public var backend: String
    public var pid: Int32
    public var startedAt: String
    public var receiveBufferBytes: Int
    /// The ruleset in force (enforce mode), or nil in discovery.
    public var ruleset: ApprovedRuleset?
    /// The latest approved ruleset, or nil when none is approved yet.
    public var approved: ApprovedRuleset?
    /// When an unconfirmed enforcement rolls back by itself (RFC 3339), or nil.
    public var confirmDeadline: String?
    /// The management channel in force, as one line.
    public var management: String
    public var rejectedInbound: UInt64
    public var rejectedOutbound: UInt64
    public var lostLogMessages: UInt64
    /// The guard could not restore Cordon's tables three times in a row (`cordon status` exits 1).
    public var degraded = false
    /// Times the guard put back tables something else had removed or changed, and escalations.
    public var guardRestores: UInt64 = 0
    public var guardEscalations: UInt64 = 0
    /// The firewall's state is in force but not yet in the database (a write failed, a full
    /// disk): the agent retries; a restart before it succeeds would forget it.
    public var unrecorded = false
    /// A release's collector check is running (the overlay is out meanwhile).
    public var releasing = false
    /// The fleet server's channel, when the agent runs with `--server`.
    public var fleet: FleetStatus?
    /// Learning names from DNS answers.
    public var names: NameCounters?

    public struct ApprovedRuleset: Codable, Sendable, Equatable {
        public var version: Int64
        public var digest: String
        public var approvedAt: String
        public var `operator`: String
        enum CodingKeys: String, CodingKey { case version, digest, approvedAt = "approved_at", `operator` }
    }

    enum CodingKeys: String, CodingKey {
        case mode, isolated, flows, events
        case lostEvents = "lost_events", resyncs, recoveredConnections = "recovered_connections"
        case ignoredEvents = "ignored_events", flushErrors = "flush_errors", lastFlush = "last_flush"
        case database, backend, pid, startedAt = "started_at", receiveBufferBytes = "receive_buffer_bytes"
        case ruleset, approved, confirmDeadline = "confirm_deadline", management
        case rejectedInbound = "rejected_inbound", rejectedOutbound = "rejected_outbound", lostLogMessages = "lost_log_messages"
        case degraded, guardRestores = "guard_restores", guardEscalations = "guard_escalations", unrecorded, releasing, fleet, names
    }

    /// Nulls are written out: `ruleset` is present (null) before the first approval.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mode, forKey: .mode)
        try c.encode(isolated, forKey: .isolated)
        try c.encode(flows, forKey: .flows)
        try c.encode(events, forKey: .events)
        try c.encode(lostEvents, forKey: .lostEvents)
        try c.encode(resyncs, forKey: .resyncs)
        try c.encode(recoveredConnections, forKey: .recoveredConnections)
        try c.encode(ignoredEvents, forKey: .ignoredEvents)
        try c.encode(flushErrors, forKey: .flushErrors)
        try c.encode(lastFlush, forKey: .lastFlush)
        try c.encode(database, forKey: .database)
        try c.encode(backend, forKey: .backend)
        try c.encode(pid, forKey: .pid)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encode(receiveBufferBytes, forKey: .receiveBufferBytes)
        try c.encode(ruleset, forKey: .ruleset)
        try c.encode(approved, forKey: .approved)
        try c.encode(confirmDeadline, forKey: .confirmDeadline)
        try c.encode(management, forKey: .management)
        try c.encode(rejectedInbound, forKey: .rejectedInbound)
        try c.encode(rejectedOutbound, forKey: .rejectedOutbound)
        try c.encode(lostLogMessages, forKey: .lostLogMessages)
        try c.encode(degraded, forKey: .degraded)
        try c.encode(guardRestores, forKey: .guardRestores)
        try c.encode(guardEscalations, forKey: .guardEscalations)
        try c.encode(unrecorded, forKey: .unrecorded)
        try c.encode(releasing, forKey: .releasing)
        try c.encodeIfPresent(fleet, forKey: .fleet)
        try c.encodeIfPresent(names, forKey: .names)
    }
}

/// The answer to a control command that changes the firewall.
public typealias ControlAnswer = Answer

/// A command on the control socket, typed: the agent switches on it, never on a string.
public enum ControlCommand: Sendable, Equatable {
    case status
    case enforce(operator: String, confirmWithin: Int64)
    case confirm(operator: String)
    case discover(operator: String, reason: String)
    case isolate(operator: String, reason: String)
    case release(operator: String, reason: String)

    public var name: String {
        switch self {
        case .status: return "status"
        case .enforce: return "enforce"
        case .confirm: return "confirm"
        case .discover: return "discover"
        case .isolate: return "isolate"
        case .release: return "release"
        }
    }

    public static let names = ["status", "enforce", "confirm", "discover", "isolate", "release"]
}

/// One request: one JSON object on one line, answered by one line. Versioned (`v`), so that an
/// agent and a CLI of different releases say clearly that they do not understand each other.
///
/// `{"v":1,"command":"enforce","operator":"alice","confirm_within":120}`; `reason` for discover,
/// isolate and release. A request without `v` is version 1 (what the first releases sent).
public struct ControlRequest: Codable, Sendable, Equatable {
    public static let version = 1
    public var command: ControlCommand
    /// `enforce` and `discover` on a host whose mode the fleet's server sets: do it anyway (the
    /// owner's way out when the server cannot be reached). Logged as an override; the server
    /// then shows the host in drift.
    public var overrideServer = false

    public init(_ command: ControlCommand, overrideServer: Bool = false) {
        self.command = command
        self.overrideServer = overrideServer
    }

    /// Why a request was refused before it reached the agent's logic; `code` is machine-readable.
    public struct Refusal: Error, Equatable {
        public var code: String
        public var message: String
    }

    enum CodingKeys: String, CodingKey { case v, command, `operator`, reason, confirmWithin = "confirm_within", overrideServer = "override_server" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.decodeIfPresent(Int.self, forKey: .v) ?? 1
        guard version == Self.version else {
            throw Refusal(code: "unsupported_version", message: "control protocol version \(version) is not supported; this agent speaks \(Self.version)")
        }
        let name = try c.decode(String.self, forKey: .command)
        func operatorName() throws -> String {
            guard let value = try c.decodeIfPresent(String.self, forKey: .operator), !value.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw Refusal(code: "missing_field", message: "\(name) needs --operator NAME (field `operator`)")
            }
            return value
        }
        let reason = try c.decodeIfPresent(String.self, forKey: .reason) ?? ""
        overrideServer = try c.decodeIfPresent(Bool.self, forKey: .overrideServer) ?? false
        switch name {
        case "status": command = .status
        case "enforce": command = .enforce(operator: try operatorName(), confirmWithin: try c.decodeIfPresent(Int64.self, forKey: .confirmWithin) ?? 120)
        case "confirm": command = .confirm(operator: try operatorName())
        case "discover": command = .discover(operator: try operatorName(), reason: reason.isEmpty ? "return to discovery" : reason)
        case "isolate": command = .isolate(operator: try operatorName(), reason: reason)
        case "release": command = .release(operator: try operatorName(), reason: reason)
        default:
            throw Refusal(code: "unknown_command", message: "unknown command '\(name)'; known: \(ControlCommand.names.joined(separator: ", "))")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.version, forKey: .v)
        try c.encode(command.name, forKey: .command)
        if overrideServer { try c.encode(true, forKey: .overrideServer) }
        switch command {
        case .status: break
        case .enforce(let name, let window):
            try c.encode(name, forKey: .operator)
            try c.encode(window, forKey: .confirmWithin)
        case .confirm(let name): try c.encode(name, forKey: .operator)
        case .discover(let name, let reason), .isolate(let name, let reason), .release(let name, let reason):
            try c.encode(name, forKey: .operator)
            try c.encode(reason, forKey: .reason)
        }
    }

    /// A request read off the socket: the command, or the answer that refuses it.
    public static func parse(_ line: Data) -> Result<ControlRequest, Refusal> {
        do {
            return .success(try JSONDecoder().decode(ControlRequest.self, from: line))
        } catch let refusal as Refusal {
            return .failure(refusal)
        } catch {
            return .failure(Refusal(code: "malformed", message: "malformed request: \(error)"))
        }
    }
}

/// The agent's end of the Unix control socket.
///
/// Every connection is served on a thread of its own, so a slow or idle client never holds up
/// another; a request must arrive whole within `requestDeadline`, and at most `maxClients` are
/// served at once (the next ones are told the agent is busy, not left hanging in the backlog).
final class ControlServer: Sendable {
    static let requestDeadline: Double = 2
    static let maxClients = 64

    let path: String
    private let fd: Int32
    /// Only the holder of `path.lock` binds or removes the socket.
    private let lock: ProcessLock
    private let clients = Atomic<Int>(0)

    /// Binds the socket with mode 0600: only root may steer the agent.
    init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { mkdir(directory, 0o755) }
        if let problem = SocketTrust.directoryProblem(path) { throw AgentError.untrustedSocket(socket: path, reason: problem) }
        lock = try ProcessLock(path: path + ".lock", guarding: "control socket \(path)")
        // Holding the lock, any socket file there is a dead agent's.
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentError.system("control socket", errno) }
        let address = try ControlClient.socketAddress(path)
        // umask, not chmod after bind: no instant where the socket exists with looser permissions.
        let previous = umask(0o177)
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        umask(previous)
        guard bound == 0, listen(fd, 128) == 0 else {
            let code = errno
            close(fd)
            throw AgentError.system("bind control socket \(path)", code)
        }
    }

    /// Accepts on a thread of its own and answers each request on another.
    func serve(_ answer: @escaping @Sendable (ControlRequest) -> Data) {
        let fd = self.fd
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE {
                        if errno == EMFILE || errno == ENFILE { usleep(10_000) }
                        continue
                    }
                    return
                }
                var timeout = timeval(tv_sec: Int(Self.requestDeadline), tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                guard clients.add(1, ordering: .relaxed).newValue <= Self.maxClients else {
                    clients.subtract(1, ordering: .relaxed)
                    ControlClient.writeAll(client, Self.refuse(.init(code: "busy", message: "too many control connections at once")) + Data("\n".utf8))
                    close(client)
                    continue
                }
                Thread.detachNewThread { [self] in
                    defer {
                        close(client)
                        clients.subtract(1, ordering: .relaxed)
                    }
                    let reply: Data
                    switch ControlClient.readLine(client, deadline: Self.requestDeadline).map(ControlRequest.parse) {
                    case .success(let request): reply = answer(request)
                    case .failure(let refusal): reply = Self.refuse(refusal)
                    case nil: reply = Self.refuse(.init(code: "malformed", message: "no request line within \(Self.requestDeadline) s"))
                    }
                    ControlClient.writeAll(client, reply + Data("\n".utf8))
                }
            }
        }
    }

    func remove() {
        close(fd)
        unlink(path)
    }

    /// `{"ok":false,"error":CODE,"message":…}`: what every client decodes as a failed answer.
    static func refuse(_ refusal: ControlRequest.Refusal) -> Data {
        (try? JSONEncoder().encode(Answer(ok: false, message: refusal.message, error: refusal.code))) ?? Data()
    }
}

/// The CLI's end of the control socket.
public struct ControlClient: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// A command that changes the firewall; the agent says whether it did and what it did.
    public func command(_ command: ControlCommand, overrideServer: Bool = false, timeoutSeconds: Int = 60) throws -> ControlAnswer {
        let data = try send(ControlRequest(command, overrideServer: overrideServer), timeoutSeconds: timeoutSeconds)
        guard let answer = try? JSONDecoder().decode(ControlAnswer.self, from: data) else {
            throw AgentError.protocolViolation("unexpected answer: \(String(decoding: data, as: UTF8.self))")
        }
        if answer.error == "unknown_command" || answer.error == "unsupported_version" {
            throw AgentError.protocolViolation("the agent on \(path) does not understand `\(command.name)` (\(answer.message)); nothing changed")
        }
        return answer
    }

    public func send(_ request: ControlRequest, timeoutSeconds: Int) throws -> Data {
        if let problem = SocketTrust.directoryProblem(path) ?? SocketTrust.socketProblem(path) {
            throw AgentError.untrustedSocket(socket: path, reason: problem)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentError.system("control socket", errno) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = try Self.socketAddress(path).withSockaddr { connect(fd, $0, $1) }
        guard connected == 0 else {
            if errno == EACCES || errno == EPERM { throw AgentError.permissionDenied(socket: path) }
            throw AgentError.notRunning(socket: path, reason: String(cString: strerror(errno)))
        }
        Self.writeAll(fd, try JSONEncoder().encode(request) + Data("\n".utf8))
        let asked = DispatchTime.now().uptimeNanoseconds
        guard let line = Self.readLine(fd) else {
            let waited = Double(DispatchTime.now().uptimeNanoseconds - asked) / 1e9
            throw AgentError.noAnswer(socket: path, reason: waited >= Double(timeoutSeconds) - 0.1
                ? "did not answer within \(timeoutSeconds) s" : "closed the connection without answering (it may have stopped)")
        }
        return line
    }


    public func status() throws -> StatusReport {
        let data = try send(ControlRequest(.status), timeoutSeconds: 5)
        do {
            return try JSONDecoder().decode(StatusReport.self, from: data)
        } catch {
            throw AgentError.protocolViolation("unexpected status answer: \(String(decoding: data, as: UTF8.self))")
        }
    }

    static func socketAddress(_ path: String) throws -> UnixSocketAddress {
        guard let address = UnixSocketAddress(path) else {
            throw AgentError.protocolViolation("socket path longer than 107 bytes: \(path)")
        }
        return address
    }

    /// Reads up to a newline (or EOF), at most 1 MiB; with a deadline, gives up once that many
    /// seconds have passed in all (a client trickling one byte at a time cannot hold a reader).
    static func readLine(_ fd: Int32, deadline seconds: Double? = nil) -> Data? {
        let end = seconds.map { DispatchTime.now().uptimeNanoseconds + UInt64($0 * 1e9) }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while data.count < 1 << 20 {
            if let end {
                let now = DispatchTime.now().uptimeNanoseconds
                guard now < end else { return nil }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, Int32((end - now) / 1_000_000) + 1)
                if ready < 0 && errno == EINTR { continue }
                guard ready > 0 else { return nil }
            }
            let count = read(fd, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            data.append(contentsOf: chunk[0..<count])
            if chunk[count - 1] == UInt8(ascii: "\n") { break }
        }
        while data.last == UInt8(ascii: "\n") { data.removeLast() }
        return data.isEmpty ? nil : data
    }

    static func writeAll(_ fd: Int32, _ data: Data) {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

/// Whether a control socket can be trusted: only root or the calling user may be able to
/// replace it. A directory another user owns or may write to lets that user swap the socket for
/// one of their own and answer root's `cordon isolate` with a fake success.
enum SocketTrust {
    /// nil when the socket's directory is root's or this user's and nobody else may write to it.
    static func directoryProblem(_ path: String) -> String? {
        let directory = (path as NSString).deletingLastPathComponent
        var info = stat()
        guard lstat(directory.isEmpty ? "." : directory, &info) == 0 else { return nil }
        if info.st_mode & S_IFMT != S_IFDIR { return "\(directory) is not a directory" }
        if info.st_uid != 0 && info.st_uid != geteuid() { return "its directory \(directory) is owned by uid \(info.st_uid), neither root nor uid \(geteuid())" }
        if info.st_mode & 0o022 != 0 { return "its directory \(directory) is writable by group or others (mode \(String(info.st_mode & 0o7777, radix: 8)))" }
        return nil
    }

    /// nil when there is no socket yet, or it is root's or this user's.
    static func socketProblem(_ path: String) -> String? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        if info.st_uid != 0 && info.st_uid != geteuid() { return "it is owned by uid \(info.st_uid), neither root nor uid \(geteuid())" }
        return nil
    }
}
