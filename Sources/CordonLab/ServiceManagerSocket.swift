#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The service manager's end of sd_notify(3) for tests: a datagram socket at a path (reachable
/// from any network namespace) that reads what a service sends to `NOTIFY_SOCKET`.
public final class ServiceManagerSocket: @unchecked Sendable {
    public let path: String
    private let descriptor: Int32

    public init(directory: String = NSTemporaryDirectory()) throws {
        path = directory + "/notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < 108 else { throw LabError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw LabError("cannot bind \(path): errno \(errno)") }
    }

    deinit {
        close(descriptor)
        unlink(path)
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
