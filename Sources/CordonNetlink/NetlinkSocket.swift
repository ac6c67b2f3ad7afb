#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Every system call goes through here: EINTR retried, -1 turned into a thrown `Errno` (what
/// swift-system's own `valueOrErrno` does for the calls it wraps).
@inline(__always)
func retrying<T: FixedWidthInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result != -1 { return result }
        let code = Errno(rawValue: errno)
        if code != .interrupted { throw code }
    }
}

/// One netlink socket (conntrack is the exception: libnetfilter_conntrack owns its own): opened
/// close-on-exec, bound to the kernel's choice of port id and the multicast groups asked for,
/// buffers sized and read back, every read and write through `retrying`.
public final class NetlinkSocket: @unchecked Sendable {
    /// `NETLINK_NETFILTER`, `NETLINK_ROUTE`.
    public let family: Int32
    public let descriptor: FileDescriptor
    /// The port id the kernel gave the socket: the `nlmsg_pid` of the answers meant for it.
    public let portID: UInt32

    /// sockaddr_nl, laid out as the kernel reads it (family, pad, port id, groups).
    private struct Address {
        var family = sa_family_t(AF_NETLINK)
        var pad: UInt16 = 0
        var portID: UInt32 = 0
        var groups: UInt32 = 0
    }

    /// - Parameter groups: the legacy group bit mask to subscribe to (0: none).
    public init(family: Int32, groups: UInt32 = 0, nonBlocking: Bool = false) throws(Errno) {
        self.family = family
        let type = Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        let fd = try retrying { socket(AF_NETLINK, type, family) }
        do {
            var address = Address(groups: groups)
            _ = try retrying {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
                }
            }
            var bound = Address()
            var length = socklen_t(MemoryLayout<Address>.size)
            _ = try retrying {
                withUnsafeMutablePointer(to: &bound) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
                }
            }
            portID = bound.portID
        } catch {
            close(fd)
            throw error
        }
        descriptor = FileDescriptor(rawValue: fd)
    }

    deinit { try? descriptor.close() }

    public var fd: Int32 { descriptor.rawValue }

    public func setOption(level: Int32, _ name: Int32, _ value: Int32) throws(Errno) {
        var value = value
        _ = try retrying { setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// Sizes the receive buffer past `rmem_max` where allowed (CAP_NET_ADMIN), else as far as
    /// the limit lets; returns what the kernel granted, which the caller reports.
    @discardableResult
    public func setReceiveBuffer(_ bytes: Int) throws(Errno) -> Int {
        try Self.setBuffer(fd: fd, bytes: bytes, force: SO_RCVBUFFORCE, plain: SO_RCVBUF)
    }

    @discardableResult
    public func setSendBuffer(_ bytes: Int) throws(Errno) -> Int {
        try Self.setBuffer(fd: fd, bytes: bytes, force: SO_SNDBUFFORCE, plain: SO_SNDBUF)
    }

    /// Also for sockets a library owns (conntrack's).
    public static func setBuffer(fd: Int32, bytes: Int, force: Int32, plain: Int32) throws(Errno) -> Int {
        var size = Int32(clamping: bytes)
        if setsockopt(fd, SOL_SOCKET, force, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = try retrying { setsockopt(fd, SOL_SOCKET, plain, &size, socklen_t(MemoryLayout<Int32>.size)) }
        }
        return try granted(fd: fd, option: plain)
    }

    /// The buffer the kernel keeps (it doubles what was asked, for its bookkeeping).
    public static func granted(fd: Int32, option: Int32) throws(Errno) -> Int {
        var size: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try retrying { getsockopt(fd, SOL_SOCKET, option, &size, &length) }
        return Int(size)
    }

    public var receiveBufferSize: Int { (try? Self.granted(fd: fd, option: SO_RCVBUF)) ?? 0 }

    /// Seconds a blocking receive waits before `EAGAIN`.
    public func setReceiveTimeout(seconds: Int) throws(Errno) {
        try setReceiveTimeout(milliseconds: seconds * 1000)
    }

    public func setReceiveTimeout(milliseconds: Int) throws(Errno) {
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        _ = try retrying { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
    }

    /// One datagram into `buffer`; `.wouldBlock` (EAGAIN) when nothing is queued and the socket
    /// does not wait, `.noBufferSpace` (ENOBUFS) after the kernel dropped messages for it.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool = true) throws(Errno) -> Int {
        try retrying { recv(fd, buffer.baseAddress, buffer.count, wait ? 0 : Int32(MSG_DONTWAIT)) }
    }

    /// One message to the kernel.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(Errno) -> Int {
        var kernel = Address()
        return try retrying {
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<Address>.size))
                }
            }
        }
    }

    /// Several buffers as one datagram (a batch): all of it or, failing, nothing.
    public func send(vectors: UnsafeMutableBufferPointer<iovec>) throws(Errno) -> Int {
        var kernel = Address()
        return try retrying {
            withUnsafeMutablePointer(to: &kernel) { address in
                var message = msghdr()
                message.msg_name = UnsafeMutableRawPointer(address)
                message.msg_namelen = socklen_t(MemoryLayout<Address>.size)
                message.msg_iov = vectors.baseAddress
                message.msg_iovlen = vectors.count
                return sendmsg(fd, &message, 0)
            }
        }
    }

    /// Waits until the socket (or `wake`) is readable; false on timeout. Milliseconds, -1: forever.
    public func waitReadable(milliseconds: Int32, wake: WakePipe? = nil) throws(Errno) -> (readable: Bool, woken: Bool) {
        var polled = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        if let wake { polled.append(pollfd(fd: wake.readEnd.rawValue, events: Int16(POLLIN), revents: 0)) }
        let count = polled.count
        let ready = try retrying { poll(&polled, nfds_t(count), milliseconds) }
        let woken = count > 1 && polled[1].revents != 0
        if woken { wake?.drain() }
        return (ready > 0 && polled[0].revents != 0, woken)
    }
}

/// One message of a received datagram, as the kernel wrote it (host byte order header).
public struct NetlinkMessage {
    /// The whole message, header first: what libnftnl's and libmnl's parsers take.
    public let start: UnsafeMutableRawPointer
    public let length: Int
    public let type: UInt16
    public let flags: UInt16
    public let sequence: UInt32
    public let portID: UInt32

    /// NLMSG_ERROR: an acknowledgement (error 0) or a refusal.
    public static let error: UInt16 = 2
    /// NLMSG_DONE: the end of a dump or a multi-part answer.
    public static let done: UInt16 = 3
    public static let headerLength = 16
}

/// The messages of one datagram, in order; the walker every reader shares. A message whose
/// length runs past the datagram ends the walk (the rest is not trusted).
public enum NetlinkMessages {
    public static func forEach(in datagram: UnsafeMutableRawBufferPointer, _ body: (NetlinkMessage) throws -> Void) rethrows {
        guard let base = datagram.baseAddress else { return }
        var offset = 0
        while datagram.count - offset >= NetlinkMessage.headerLength {
            let start = base + offset
            let length = Int(start.loadUnaligned(as: UInt32.self))
            guard length >= NetlinkMessage.headerLength, length <= datagram.count - offset else { return }
            try body(NetlinkMessage(start: start, length: length, type: start.loadUnaligned(fromByteOffset: 4, as: UInt16.self),
                                    flags: start.loadUnaligned(fromByteOffset: 6, as: UInt16.self),
                                    sequence: start.loadUnaligned(fromByteOffset: 8, as: UInt32.self),
                                    portID: start.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            offset += (length + 3) & ~3
        }
    }
}

/// The two ends of a wake-up pipe, for a reader waiting in `poll` that another thread must
/// interrupt (shutdown). Closed when the last holder goes away, so a late `wake` never writes
/// to a descriptor number reused by something else.
public final class WakePipe: Sendable {
    public let readEnd: FileDescriptor
    public let writeEnd: FileDescriptor

    public init() throws(Errno) {
        let ends: (readEnd: FileDescriptor, writeEnd: FileDescriptor)
        do { ends = try FileDescriptor.pipe() } catch { throw (error as? Errno) ?? .ioError }
        for end in [ends.readEnd, ends.writeEnd] {
            _ = fcntl(end.rawValue, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end.rawValue, F_SETFL, O_NONBLOCK)
        }
        readEnd = ends.readEnd
        writeEnd = ends.writeEnd
    }

    deinit {
        try? readEnd.close()
        try? writeEnd.close()
    }

    /// Never blocks: a full pipe already means "woken".
    public func wake() {
        let byte: [UInt8] = [1]
        _ = try? byte.withUnsafeBytes { try writeEnd.write($0) }
    }

    public func drain() {
        var bytes = [UInt8](repeating: 0, count: 64)
        while (try? bytes.withUnsafeMutableBytes { try readEnd.read(into: $0) }) ?? 0 > 0 {}
    }
}
