#if canImport(Glibc)
import Glibc
#endif

/// A `sockaddr_un` for a path, or for an abstract name written `@name` (as `NOTIFY_SOCKET` may
/// be), with the length to pass along: the control socket, the notify socket and the tests'
/// service manager all make theirs here. Sendable by hand: `sockaddr_un` is bytes, no pointers.
public struct UnixSocketAddress: @unchecked Sendable {
    public private(set) var address = sockaddr_un()
    public let length: socklen_t

    /// nil when the path does not fit (107 bytes and a terminator).
    public init?(_ path: String) {
        var bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        // An abstract name starts with a NUL and is not terminated: its length says where it ends.
        let abstract = bytes[0] == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            if !abstract { raw[bytes.count] = 0 }
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
    }

    /// Runs `body` with the address as the `sockaddr` that bind, connect and sendto take.
    public func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var copy = address
        return withUnsafePointer(to: &copy) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}
