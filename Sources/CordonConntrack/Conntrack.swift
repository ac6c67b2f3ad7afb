#if canImport(Glibc)
import Glibc
#endif
internal import CConntrack
import CordonCore

/// An error from a conntrack netlink call, with the errno the kernel gave.
public struct ConntrackError: Error, CustomStringConvertible {
    public let operation: String
    public let errno: Int32
    public var description: String { "conntrack \(operation): \(String(cString: strerror(errno)))" }
}

/// One conntrack entry as delivered by an event or a dump.
public struct ConntrackEntry: Sendable {
    public enum Kind: Sendable { case new, destroy, existing }
    public var kind: Kind
    /// The kernel's id of the entry; stable for its life, so a dump can be matched with events.
    public var id: UInt32
    public var tuple: ConnectionTuple
    /// Both directions, when `nf_conntrack_acct` is on; otherwise 0.
    public var packets: UInt64
    public var bytes: UInt64

    public init(kind: Kind, id: UInt32, tuple: ConnectionTuple, packets: UInt64 = 0, bytes: UInt64 = 0) {
        self.kind = kind
        self.id = id
        self.tuple = tuple
        self.packets = packets
        self.bytes = bytes
    }
}

/// What ended a subscription's read loop.
public enum CatchOutcome: Sendable {
    /// The handler asked to stop.
    case stopped
    /// The socket buffer overflowed (ENOBUFS): events were lost and the table must be re-read.
    case overrun
    /// Nothing arrived within the receive timeout; a chance to check for shutdown.
    case idle
}

/// Reads one entry's attributes. Everything is read through libnetfilter_conntrack's typed getters;
/// ports come in network byte order.
private func entry(_ ct: OpaquePointer, kind: ConntrackEntry.Kind) -> ConntrackEntry? {
    let l3 = Int32(nfct_get_attr_u8(ct, ATTR_L3PROTO))
    let transport = nfct_get_attr_u8(ct, ATTR_L4PROTO)
    func address(_ v4: nf_conntrack_attr, _ v6: nf_conntrack_attr) -> IPAddress? {
        if l3 == AF_INET {
            return IPAddress(ipv4: UInt32(bigEndian: nfct_get_attr_u32(ct, v4)))
        }
        guard l3 == AF_INET6, let raw = nfct_get_attr(ct, v6) else { return nil }
        return IPAddress(bytes: UnsafeRawBufferPointer(start: raw, count: 16))
    }
    guard let source = address(ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC),
          let destination = address(ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST)
    else { return nil }
    let replySource = address(ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC) ?? destination
    var tuple = ConnectionTuple(transport: transport, source: source, destination: destination, replySource: replySource)
    if IPProtocolNumber.isICMP(transport) {
        tuple.icmpType = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE)
        tuple.icmpCode = nfct_get_attr_u8(ct, ATTR_ICMP_CODE)
    } else if IPProtocolNumber.hasPorts(transport) {
        tuple.sourcePort = UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_ORIG_PORT_SRC))
        tuple.destinationPort = UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST))
        tuple.replySourcePort = UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC))
    }
    var packets: UInt64 = 0, bytes: UInt64 = 0
    if nfct_attr_is_set(ct, ATTR_ORIG_COUNTER_PACKETS) > 0 {
        packets = nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_PACKETS) &+ nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_PACKETS)
        bytes = nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_BYTES) &+ nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_BYTES)
    }
    return ConntrackEntry(kind: kind, id: nfct_get_attr_u32(ct, ATTR_ID), tuple: tuple, packets: packets, bytes: bytes)
}

/// Carries the Swift handler through libnetfilter_conntrack's `void *` callback argument.
private final class HandlerBox {
    let handle: (ConntrackEntry) -> Bool
    var stopped = false
    init(_ handle: @escaping (ConntrackEntry) -> Bool) { self.handle = handle }
}

private let eventCallback: @convention(c) (nf_conntrack_msg_type, OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = {
    type, ct, context in
    guard let ct, let context else { return CConntrack_callbackContinue }
    let box = Unmanaged<HandlerBox>.fromOpaque(context).takeUnretainedValue()
    let kind: ConntrackEntry.Kind
    switch type {
    case NFCT_T_NEW: kind = .new
    case NFCT_T_DESTROY: kind = .destroy
    default: kind = .existing
    }
    guard let entry = entry(ct, kind: kind) else { return CConntrack_callbackContinue }
    if box.handle(entry) { return CConntrack_callbackContinue }
    box.stopped = true
    return CConntrack_callbackStop
}

/// A subscription to conntrack NEW and DESTROY events of the current network namespace.
///
/// Not thread-safe: one thread owns it and calls `next` in a loop. `nfct_catch` blocks, which is
/// why the caller gives it its own thread rather than a shared executor.
public final class ConntrackEvents {
    private let handle: OpaquePointer
    private let box: HandlerBox

    /// - Parameters:
    ///   - receiveBuffer: bytes of kernel socket buffer. Events arrive in bursts far faster than
    ///     any consumer is scheduled, so a large buffer is what makes "lossless" possible at all.
    ///   - idleTimeout: how long one `next` call may wait with no events, so the owner can check
    ///     for shutdown.
    public init(receiveBuffer: Int = 64 << 20, idleTimeout: Double = 0.2,
                handler: @escaping (ConntrackEntry) -> Bool) throws {
        guard let handle = nfct_open(UInt8(NFNL_SUBSYS_CTNETLINK), CConntrack_groupsNewDestroy) else {
            throw ConntrackError(operation: "subscribe to events", errno: errno)
        }
        self.handle = handle
        box = HandlerBox(handler)
        let fd = nfct_fd(handle)
        var size = Int32(clamping: receiveBuffer)
        // FORCE needs CAP_NET_ADMIN, which the agent has; it lifts the rmem_max ceiling.
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: Int(idleTimeout), tv_usec: Int((idleTimeout - Double(Int(idleTimeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        nfct_callback_register(handle, NFCT_T_ALL, eventCallback, Unmanaged.passUnretained(box).toOpaque())
    }

    deinit { nfct_close(handle) }

    /// The receive buffer the kernel actually granted, in bytes.
    public var receiveBufferSize: Int {
        var size: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(nfct_fd(handle), SOL_SOCKET, SO_RCVBUF, &size, &length)
        return Int(size)
    }

    /// Reads and handles events until the handler says stop, the buffer overran, or the socket
    /// stayed quiet for the idle timeout.
    public func next() throws -> CatchOutcome {
        box.stopped = false
        let result = nfct_catch(handle)
        if box.stopped { return .stopped }
        guard result < 0 else { return .idle }
        switch errno {
        case ENOBUFS: return .overrun
        case EAGAIN, EINTR: return .idle
        default: throw ConntrackError(operation: "read events", errno: errno)
        }
    }
}

/// A one-off read of the whole conntrack table, both families.
public enum ConntrackTable {
    public static func dump() throws -> [ConntrackEntry] {
        guard let handle = nfct_open(UInt8(NFNL_SUBSYS_CTNETLINK), 0) else {
            throw ConntrackError(operation: "open for dump", errno: errno)
        }
        defer { nfct_close(handle) }
        var entries: [ConntrackEntry] = []
        let box = HandlerBox { entries.append($0); return true }
        nfct_callback_register(handle, NFCT_T_ALL, eventCallback, Unmanaged.passUnretained(box).toOpaque())
        var family = UInt32(AF_UNSPEC)
        let result = withExtendedLifetime(box) { nfct_query(handle, NFCT_Q_DUMP, &family) }
        guard result == 0 else { throw ConntrackError(operation: "dump table", errno: errno) }
        return entries
    }
}
