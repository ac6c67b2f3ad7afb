#if canImport(Glibc)
import Glibc
#endif
internal import CConntrack
import CordonCore
import CordonNetlink
import SystemPackage

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
    /// TCP only: the kernel's state (TCP_CONNTRACK_*; 3 is ESTABLISHED).
    public var tcpState: UInt8?

    /// TCP_CONNTRACK_ESTABLISHED: a session in use, not one closing or half-open.
    public static let tcpEstablished: UInt8 = 3

    public init(kind: Kind, id: UInt32, tuple: ConnectionTuple, packets: UInt64 = 0, bytes: UInt64 = 0, tcpState: UInt8? = nil) {
        self.tcpState = tcpState
        self.kind = kind
        self.id = id
        self.tuple = tuple
        self.packets = packets
        self.bytes = bytes
    }
}

/// What one read of a subscription found.
public enum CatchOutcome: Sendable, Equatable {
    /// This many events were read and handed over.
    case events(Int)
    /// The socket buffer overflowed (ENOBUFS): events were lost and the table must be re-read.
    case overrun
    /// Nothing arrived within the idle timeout; a chance to check for shutdown.
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
    let tcpState = transport == IPProtocolNumber.tcp && nfct_attr_is_set(ct, ATTR_TCP_STATE) > 0 ? nfct_get_attr_u8(ct, ATTR_TCP_STATE) : nil
    return ConntrackEntry(kind: kind, id: nfct_get_attr_u32(ct, ATTR_ID), tuple: tuple, packets: packets, bytes: bytes, tcpState: tcpState)
}

/// Carries the Swift handler of a dump through libnetfilter_conntrack's `void *` callback argument.
private final class HandlerBox {
    let handle: (ConntrackEntry) -> Void
    init(_ handle: @escaping (ConntrackEntry) -> Void) { self.handle = handle }
}

private let dumpCallback: @convention(c) (nf_conntrack_msg_type, OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = {
    _, ct, context in
    guard let ct, let context else { return CConntrack_callbackContinue }
    let box = Unmanaged<HandlerBox>.fromOpaque(context).takeUnretainedValue()
    guard let entry = entry(ct, kind: .existing) else { return CConntrack_callbackContinue }
    box.handle(entry)
    return CConntrack_callbackContinue
}

/// A subscription to conntrack NEW and DESTROY events of the current network namespace.
///
/// Not thread-safe: one thread owns it and calls `next` in a loop. Events are read in batches
/// (one recvmmsg per up to `batchSize` events) and, after the socket runs dry, the reader pauses
/// for `coalescing` seconds before waiting again, so that at high rates each wake-up handles many
/// events instead of one; the kernel buffer absorbs what arrives meanwhile.
public final class ConntrackEvents {
    private let handle: OpaquePointer
    private let fd: Int32
    private let batchSize = 256
    private let slotSize = 4096
    private let storage: UnsafeMutableRawPointer
    private var slots: [UnsafeMutableRawPointer?]
    private var lengths: [UInt32]
    private let idleTimeout: Int32
    private let coalescing: UInt32
    private var entries: [ConntrackEntry] = []
    /// Interrupts a waiting `next` from another thread (shutdown).
    public let waker: Waker

    /// Wakes the reader through a pipe it polls together with the netlink socket.
    public struct Waker: Sendable {
        fileprivate let pipe: WakePipe
        public func wake() { pipe.wake() }
    }

    /// - Parameters:
    ///   - receiveBuffer: bytes of kernel socket buffer. The kernel's garbage collector destroys
    ///     expired entries in bursts; the buffer is what lets those bursts wait for the reader.
    ///   - idleTimeout: longest wait in one `next` call with no events, so the owner can check
    ///     for shutdown.
    ///   - coalescing: pause after the socket ran dry (microseconds are plenty; 0 turns it off).
    public init(receiveBuffer: Int = 128 << 20, idleTimeout: Double = 0.2, coalescing: Double = 0.002) throws {
        guard let handle = nfct_open(UInt8(NFNL_SUBSYS_CTNETLINK), CConntrack_groupsNewDestroy) else {
            throw ConntrackError(operation: "subscribe to events", errno: errno)
        }
        self.handle = handle
        fd = nfct_fd(handle)
        let pipe: WakePipe
        do {
            // FORCE needs CAP_NET_ADMIN, which the agent has; it lifts the rmem_max ceiling.
            _ = try NetlinkSocket.setBuffer(fd: fd, bytes: receiveBuffer, force: SO_RCVBUFFORCE, plain: SO_RCVBUF)
            pipe = try WakePipe()
        } catch {
            nfct_close(handle)
            throw ConntrackError(operation: "set up the event socket", errno: error.rawValue)
        }
        storage = UnsafeMutableRawPointer.allocate(byteCount: batchSize * slotSize, alignment: 16)
        slots = (0..<batchSize).map { [storage, slotSize] in storage + $0 * slotSize }
        lengths = [UInt32](repeating: 0, count: batchSize)
        self.idleTimeout = Int32(idleTimeout * 1000)
        self.coalescing = UInt32(coalescing * 1_000_000)
        entries.reserveCapacity(batchSize)
        waker = Waker(pipe: pipe)
    }

    deinit {
        nfct_close(handle)
        storage.deallocate()
    }

    /// The receive buffer the kernel actually granted, in bytes.
    public var receiveBufferSize: Int { (try? NetlinkSocket.granted(fd: fd, option: SO_RCVBUF)) ?? 0 }

    /// Reads what is queued (up to one batch) and hands it to `handle` in one call; when nothing
    /// is queued, waits up to the idle timeout (or until woken) unless `wait` is false.
    public func next(wait: Bool = true, _ handle: ([ConntrackEntry]) -> Void) throws -> CatchOutcome {
        let received = slots.withUnsafeBufferPointer { slots in
            CConntrack_receiveBatch(fd, slots.baseAddress, slotSize, &lengths, UInt32(batchSize))
        }
        if received < 0 {
            switch errno {
            case ENOBUFS:
                return .overrun
            case EAGAIN:
                guard wait else { return .idle }
                var polled = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                              pollfd(fd: waker.pipe.readEnd.rawValue, events: Int16(POLLIN), revents: 0)]
                let ready = poll(&polled, 2, idleTimeout)
                if polled[1].revents != 0 {
                    waker.pipe.drain()
                } else if ready > 0 && coalescing > 0 {
                    usleep(coalescing)
                }
                return .idle
            default:
                throw ConntrackError(operation: "read events", errno: errno)
            }
        }
        entries.removeAll(keepingCapacity: true)
        for index in 0..<Int(received) where lengths[index] > 0 {
            guard let message = slots[index], let ct = nfct_new() else { continue }
            defer { nfct_destroy(ct) }
            let header = message.assumingMemoryBound(to: nlmsghdr.self)
            guard nfct_nlmsg_parse(header, ct) >= 0 else { continue }
            if let entry = entry(ct, kind: CConntrack_isDestroy(message) != 0 ? .destroy : .new) {
                entries.append(entry)
            }
        }
        handle(entries)
        return .events(Int(received))
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
        let box = HandlerBox { entries.append($0) }
        nfct_callback_register(handle, NFCT_T_ALL, dumpCallback, Unmanaged.passUnretained(box).toOpaque())
        var family = UInt32(AF_UNSPEC)
        let result = withExtendedLifetime(box) { nfct_query(handle, NFCT_Q_DUMP, &family) }
        guard result == 0 else { throw ConntrackError(operation: "dump table", errno: errno) }
        return entries
    }
}
