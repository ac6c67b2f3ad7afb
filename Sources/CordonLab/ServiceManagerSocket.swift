#if canImport(Glibc)
import Glibc
#endif
import CordonTelemetry
import Foundation

/// The service manager's end of sd_notify(3) for tests: a datagram socket at a path (reachable
/// from any network namespace) that reads what a service sends to `NOTIFY_SOCKET`.
public final class ServiceManagerSocket: @unchecked Sendable {
    public let path: String
    private let descriptor: Int32

    /// - Parameter abstract: an abstract name (`@...`, as newer systemd gives) instead of a file.
    public init(directory: String = NSTemporaryDirectory(), abstract: Bool = false) throws {
        let name = "notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        path = abstract ? "@cordon-" + name : directory + "/" + name
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard let address = UnixSocketAddress(path) else { throw LabError("socket path too long: \(path)") }
        let bound = address.withSockaddr { bind(descriptor, $0, $1) }
        guard bound == 0 else { throw LabError("cannot bind \(path): errno \(errno)") }
    }

    deinit {
        close(descriptor)
        if !path.hasPrefix("@") { unlink(path) }
    }

    /// One datagram, or nil after `timeout` seconds.
    public func receive(timeout: Double = 2) -> String? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        return count < 0 ? nil : String(decoding: buffer[..<count], as: UTF8.self)
    }

    /// Every datagram that arrives within `seconds`, with when it arrived (seconds since the call).
    public func collect(for seconds: Double) -> [(at: Double, message: String)] {
        let started = Date()
        var messages: [(Double, String)] = []
        while true {
            let left = seconds - Date().timeIntervalSince(started)
            guard left > 0 else { return messages }
            if let message = receive(timeout: left) { messages.append((Date().timeIntervalSince(started), message)) }
        }
    }
}
