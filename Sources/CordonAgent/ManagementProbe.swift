#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import Foundation
import Synchronization

/// The management channel's health: a TCP connect to every collector, through whatever rules
/// are in force. Connect-only: it proves the path, and needs nothing from the collector's protocol.
public enum ManagementProbe {
    /// The failures, one text per collector that did not accept a connection in time.
    /// All at once, so that several unreachable collectors cost one timeout, not one each.
    public static func check(_ collectors: [ManagementChannel.Endpoint], timeoutSeconds: Double = 2) -> [String] {
        let results = Mutex([String?](repeating: nil, count: collectors.count))
        DispatchQueue.concurrentPerform(iterations: collectors.count) { index in
            let endpoint = collectors[index]
            let failure = connect(endpoint, timeoutSeconds: timeoutSeconds).map { "collector \(endpoint.hostPort) unreachable (\($0))" }
            results.withLock { $0[index] = failure }
        }
        return results.withLock { $0.compactMap { $0 } }
    }

    /// nil on success, else why.
    static func connect(_ endpoint: ManagementChannel.Endpoint, timeoutSeconds: Double) -> String? {
        let address = endpoint.addresses.address
        let family = address.family == .ipv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        var storage = sockaddr_storage()
        let length: socklen_t
        let bytes = address.bytes
        if address.family == .ipv4 {
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = (endpoint.port ?? 0).bigEndian
            withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: withUnsafeBytes(of: v4) { Array($0) }) }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = (endpoint.port ?? 0).bigEndian
            withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: withUnsafeBytes(of: v6) { Array($0) }) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        let started = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        if started == 0 { return nil }
        guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, Int32(timeoutSeconds * 1000))
        if ready == 0 { return "no answer within \(timeoutSeconds) s" }
        if ready < 0 { return "poll: \(String(cString: strerror(errno)))" }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        return error == 0 ? nil : String(cString: strerror(error))
    }
}
