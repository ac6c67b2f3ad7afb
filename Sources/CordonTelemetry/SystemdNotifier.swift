#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The service manager's notification protocol (sd_notify(3)), spoken directly: one datagram per
/// message to the socket in `NOTIFY_SOCKET`. Linking libsystemd for four lines of protocol would
/// add a library to every host, and the protocol is stable and documented.
///
/// Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does nothing.
public final class SystemdNotifier: Sendable {
    private let address: UnixSocketAddress?
    private let descriptor: Int32
    /// Half of `WatchdogSec=`, the interval at which `WATCHDOG=1` keeps the service alive; nil
    /// when the manager asked for no watchdog (or asked it of another process).
    public let watchdogInterval: Double?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        var interval: Double?
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == getpid() }) ?? true {
            interval = Double(usec) / 2e6
        }
        watchdogInterval = interval
        guard let path = environment["NOTIFY_SOCKET"], path.hasPrefix("/") || path.hasPrefix("@"),
              let address = UnixSocketAddress(path) else {
            (address, descriptor) = (nil, -1)
            return
        }
        self.address = address
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }

    /// Whether a service manager listens.
    public var active: Bool { address != nil && descriptor >= 0 }

    /// Sends `KEY=value` lines; false when no manager listens or the send failed.
    @discardableResult
    public func notify(_ fields: [(String, String)]) -> Bool {
        guard let address, descriptor >= 0 else { return false }
        // A value holding a newline would start a field of its own.
        let message = fields.map { "\($0.0)=\($0.1.replacingOccurrences(of: "\n", with: " "))" }.joined(separator: "\n")
        let sent = message.utf8CString.withUnsafeBufferPointer { text in
            address.withSockaddr { sendto(descriptor, text.baseAddress, text.count - 1, Int32(MSG_NOSIGNAL), $0, $1) }
        }
        return sent >= 0
    }

    /// The service is up (after its tables are installed and its socket listens).
    public func ready(status: String) { notify([("READY", "1"), ("STATUS", status), ("MAINPID", "\(getpid())")]) }
    public func status(_ status: String) { notify([("STATUS", status)]) }
    public func watchdog() { notify([("WATCHDOG", "1")]) }
    public func stopping(status: String) { notify([("STOPPING", "1"), ("STATUS", status)]) }
}
