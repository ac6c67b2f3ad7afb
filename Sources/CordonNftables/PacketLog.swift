#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import CordonNetlink
import SystemPackage
import Synchronization

/// Why a packet log could not be opened or read.
public enum PacketLogError: Error, CustomStringConvertible, Equatable {
    /// Another netlink socket of this network namespace owns the group.
    case groupInUse(group: UInt16)
    /// The kernel refused a configuration message.
    case refused(operation: String, errno: Int32)
    case system(operation: String, errno: Int32)
    /// The kernel did not acknowledge a configuration message in time.
    case timeout(operation: String)
    /// `next` was called after `close`.
    case closed

    public var description: String {
        switch self {
        case .groupInUse(let group):
            return "NFLOG group \(group) is already bound by another program in this network namespace "
                + "(ulogd, another agent); stop it or choose another group"
        case .refused(let operation, let errno), .system(let operation, let errno):
            return "nflog \(operation): \(String(cString: strerror(errno)))"
        case .timeout(let operation):
            return "nflog \(operation): no answer from the kernel"
        case .closed:
            return "nflog: the packet log is closed"
        }
    }
}

/// A packet a rule logged to the group, reduced to what a flow record needs.
public struct LoggedPacket: Sendable, Hashable {
    /// The rule's `log prefix`, which tells which chain (and so which verdict) logged it.
    public var prefix: String
    public var header: PacketHeader
    /// The packet from its network header on, as far as the copy range went; only for a log
    /// opened with `keepingPackets` (the DNS answers), empty otherwise.
    public var bytes: [UInt8]

    public init(prefix: String, header: PacketHeader, bytes: [UInt8] = []) {
        self.prefix = prefix
        self.header = header
        self.bytes = bytes
    }
}

/// The packets nftables rules log to one NFLOG group (`log group N`) of the current network
/// namespace, read over nfnetlink_log.
///
/// The kernel batches: it queues log messages until `queueThreshold` are waiting or
/// `flushTimeout` has passed, then sends them as one datagram, so one `next` call typically
/// hands over many packets. Only the first 128 bytes of each packet are copied: IPv6 with its
/// extension headers and the ports fit; the payload is none of Cordon's business.
///
/// One thread reads (`next`); any thread may wake it (`waker`) or `close` the log. The socket
/// belongs to the network namespace of the thread that created the log.
public final class PacketLog: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// This many packets were handed over (0 when a datagram held none that parsed as IP).
        case packets(Int)
        /// The socket buffer overflowed (ENOBUFS): the kernel dropped log messages.
        case overrun
        /// Nothing arrived within the idle timeout, or the reader was woken.
        case idle
    }

    /// Wakes the reader through a pipe it polls together with the netlink socket.
    public struct Waker: Sendable {
        fileprivate let pipe: WakePipe
        public func wake() {
            pipe.wake()
        }
    }

    public let group: UInt16
    public let waker: Waker
    private let keepingPackets: Bool
    private let idleTimeout: Int32
    private let state: Mutex<ReadState>

    /// What only the reader touches; behind a lock so that `close` cannot pull the socket from
    /// under a read in progress.
    private struct ReadState {
        var socket: NetlinkSocket?
        var buffer: UnsafeMutableRawBufferPointer
        /// Packets that arrived while waiting for a configuration ACK.
        var early: [LoggedPacket] = []
        var earlyOverrun = false
    }

    /// Bytes copied from each packet: 40 (IPv6) + a hop-by-hop, a fragment and a routing header
    /// of common sizes + the ports, or IPv4 with the largest options + the ports.
    public static let copyRange: UInt32 = 128
    /// What a log that keeps whole packets copies: the largest IP packet.
    public static let wholePackets: UInt32 = 0xFFFF
    /// The kernel's batch size (NFULA_CFG_NLBUFSIZ): room for a few hundred small messages.
    private static let kernelBatchBytes: UInt32 = 64 << 10
    /// A datagram is one batch (at most 128 KiB, the kernel's cap) or one message, which can hold
    /// a whole 64 KiB packet in the moment before the copy range applies. A cut datagram would
    /// lose messages.
    private static let receiveBytes = 1 << 18
    private static let subsystem = UInt16(NFNL_SUBSYS_ULOG) << 8

    /// - Parameters:
    ///   - group: the NFLOG group of the rules (`log group N`).
    ///   - receiveBuffer: bytes of kernel socket buffer (SO_RCVBUFFORCE); what lets a burst of
    ///     rejected packets (a port scan) wait for the reader instead of being dropped.
    ///   - queueThreshold: messages the kernel queues before sending a batch.
    ///   - flushTimeout: seconds the kernel holds a partial batch (1/100 s resolution).
    ///   - idleTimeout: longest wait in one `next` call, so the owner can check for shutdown.
    ///   - keepingPackets: copy whole packets (`wholePackets`) and hand them over in `bytes`.
    /// - Throws: `PacketLogError.groupInUse` when another socket of this namespace owns the group.
    public init(group: UInt16, receiveBuffer: Int = 8 << 20, queueThreshold: UInt32 = 128,
                flushTimeout: Double = 0.1, idleTimeout: Double = 0.2, keepingPackets: Bool = false) throws {
        let range = keepingPackets ? Self.wholePackets : Self.copyRange
        let socket: NetlinkSocket
        let pipe: WakePipe
        do {
            // Reads never block: waiting happens in poll, together with the wake-up pipe.
            socket = try NetlinkSocket(family: NETLINK_NETFILTER, nonBlocking: true)
            // FORCE needs CAP_NET_ADMIN, which the agent has; it lifts the rmem_max ceiling.
            try socket.setReceiveBuffer(receiveBuffer)
            pipe = try WakePipe()
        } catch {
            throw PacketLogError.system(operation: "open the netlink socket for group \(group)", errno: error.rawValue)
        }
        var readState = ReadState(socket: socket,
                                  buffer: .allocate(byteCount: Self.receiveBytes, alignment: 16))
        do {
            let ticks = UInt32(max(0, min(flushTimeout, 60)) * 100)
            try Self.configure(&readState, group: group, keepingPackets: keepingPackets, operation: "bind group \(group)") { message in
                var command = UInt8(NFULNL_CFG_CMD_BIND.rawValue)
                mnl_attr_put(message, UInt16(NFULA_CFG_CMD.rawValue), 1, &command)
            }
            try Self.configure(&readState, group: group, keepingPackets: keepingPackets, operation: "configure group \(group)") { message in
                // struct nfulnl_msg_config_mode is packed: be32 copy range, copy mode, pad.
                var mode: [UInt8] = [UInt8(range >> 24), UInt8((range >> 16) & 0xFF), UInt8((range >> 8) & 0xFF),
                                     UInt8(range & 0xFF), UInt8(NFULNL_COPY_PACKET), 0]
                mnl_attr_put(message, UInt16(NFULA_CFG_MODE.rawValue), mode.count, &mode)
                mnl_attr_put_u32(message, UInt16(NFULA_CFG_TIMEOUT.rawValue), ticks.bigEndian)
                mnl_attr_put_u32(message, UInt16(NFULA_CFG_QTHRESH.rawValue), max(1, queueThreshold).bigEndian)
                mnl_attr_put_u32(message, UInt16(NFULA_CFG_NLBUFSIZ.rawValue), Self.kernelBatchBytes.bigEndian)
            }
        } catch {
            readState.buffer.deallocate()
            throw error
        }
        self.group = group
        self.keepingPackets = keepingPackets
        self.idleTimeout = Int32(idleTimeout * 1000)
        waker = Waker(pipe: pipe)
        state = Mutex(readState)
    }

    deinit {
        close()
        state.withLock { $0.buffer.deallocate() }
    }

    /// The receive buffer the kernel actually granted, in bytes.
    public var receiveBufferSize: Int { state.withLock { $0.socket?.receiveBufferSize ?? 0 } }

    /// Releases the group (another program may bind it afterwards) and closes the socket. A
    /// reader waiting in `next` is woken first; its next call throws `closed`. Idempotent.
    public func close() {
        waker.wake()
        state.withLock { state in
            guard let socket = state.socket else { return }
            // Closing the socket alone would release the group too; saying so is explicit and
            // does not depend on when the kernel notices the release. No ACK: nothing to do
            // about a failure here.
            var buffer = [UInt8](repeating: 0, count: 64)
            buffer.withUnsafeMutableBytes { raw in
                let message = Self.configMessage(raw.baseAddress!, group: group, sequence: 0, acknowledged: false)
                var command = UInt8(NFULNL_CFG_CMD_UNBIND.rawValue)
                mnl_attr_put(message, UInt16(NFULA_CFG_CMD.rawValue), 1, &command)
                _ = try? socket.send(UnsafeRawBufferPointer(start: message, count: Int(message.pointee.nlmsg_len)))
            }
            state.socket = nil
        }
    }

    /// Reads one datagram (a kernel batch) and hands its packets to `handle`, in order; when
    /// nothing is queued, waits up to the idle timeout (or until woken) unless `wait` is false.
    /// `handle` runs after the read, outside the log's lock.
    public func next(wait: Bool = true, _ handle: (LoggedPacket) -> Void) throws -> Outcome {
        let (outcome, packets) = try state.withLock { state -> (Outcome, [LoggedPacket]) in
            guard state.socket != nil else { throw PacketLogError.closed }
            if state.earlyOverrun {
                state.earlyOverrun = false
                return (.overrun, [])
            }
            if !state.early.isEmpty {
                defer { state.early.removeAll() }
                return (.packets(state.early.count), state.early)
            }
            var packets: [LoggedPacket] = []
            switch try receive(&state, into: &packets) {
            case .packets:
                return (.packets(packets.count), packets)
            case .overrun:
                return (.overrun, [])
            case .idle:
                guard wait else { return (.idle, []) }
            }
            guard let socket = state.socket else { throw PacketLogError.closed }
            let ready: (readable: Bool, woken: Bool)
            do { ready = try socket.waitReadable(milliseconds: idleTimeout, wake: waker.pipe) } catch let error as Errno {
                throw PacketLogError.system(operation: "wait for group \(group)", errno: error.rawValue)
            }
            guard ready.readable, !ready.woken else { return (.idle, []) }
            let outcome = try receive(&state, into: &packets)
            return (outcome == .packets(0) ? .packets(packets.count) : outcome, packets)
        }
        packets.forEach(handle)
        return outcome
    }

    /// One non-blocking read. `.packets(0)` means a datagram was read (its packets appended);
    /// `.idle` that none was queued.
    private func receive(_ state: inout ReadState, into packets: inout [LoggedPacket]) throws -> Outcome {
        guard let socket = state.socket else { throw PacketLogError.closed }
        do {
            let received = try socket.receive(into: state.buffer, wait: false)
            Self.parse(UnsafeMutableRawBufferPointer(rebasing: state.buffer[..<received]), keepingPackets: keepingPackets, into: &packets) { _, _ in }
            return .packets(0)
        } catch {
            switch error {
            case .wouldBlock: return .idle
            case .noBufferSpace: return .overrun
            // A datagram larger than the buffer (cannot happen with the sizes above): its
            // messages are gone, which is a loss like an overrun.
            case .noSpace: return .overrun
            default: throw PacketLogError.system(operation: "read group \(group)", errno: error.rawValue)
            }
        }
    }

    // MARK: - Messages

    /// Writes the header of an NFULNL_MSG_CONFIG message for `group`; attributes follow.
    private static func configMessage(_ buffer: UnsafeMutableRawPointer, group: UInt16, sequence: UInt32,
                                      acknowledged: Bool) -> UnsafeMutablePointer<nlmsghdr> {
        let message = mnl_nlmsg_put_header(buffer)!
        message.pointee.nlmsg_type = subsystem | UInt16(NFULNL_MSG_CONFIG.rawValue)
        message.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | (acknowledged ? NLM_F_ACK : 0))
        message.pointee.nlmsg_seq = sequence
        let generic = mnl_nlmsg_put_extra_header(message, MemoryLayout<nfgenmsg>.size)!
            .assumingMemoryBound(to: nfgenmsg.self)
        generic.pointee.nfgen_family = UInt8(AF_UNSPEC)
        generic.pointee.version = UInt8(NFNETLINK_V0)
        // The group travels in res_id, in network byte order.
        generic.pointee.res_id = group.bigEndian
        return message
    }

    /// Sends one configuration message and waits (up to 5 s) for its ACK. Packets that arrive
    /// meanwhile are kept for the first `next`.
    private static func configure(_ state: inout ReadState, group: UInt16, keepingPackets: Bool, operation: String,
                                  attributes: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        guard let socket = state.socket else { throw PacketLogError.closed }
        let sequence = UInt32(truncatingIfNeeded: time(nil)) &+ UInt32.random(in: 0...UInt32(UInt16.max))
        var request = [UInt8](repeating: 0, count: 256)
        do {
            _ = try request.withUnsafeMutableBytes { raw in
                let message = configMessage(raw.baseAddress!, group: group, sequence: sequence, acknowledged: true)
                attributes(message)
                return try socket.send(UnsafeRawBufferPointer(start: message, count: Int(message.pointee.nlmsg_len)))
            }
        } catch let error as Errno {
            throw PacketLogError.system(operation: operation, errno: error.rawValue)
        }

        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        deadline.tv_sec += 5
        var answer: Int32?
        while answer == nil {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let left = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1_000_000
            guard left > 0 else { throw PacketLogError.timeout(operation: operation) }
            guard (try? socket.waitReadable(milliseconds: Int32(left)))?.readable == true else { continue }
            let received: Int
            do { received = try socket.receive(into: state.buffer, wait: false) } catch {
                switch error {
                case .wouldBlock: continue
                case .noBufferSpace, .noSpace: state.earlyOverrun = true; continue
                default: throw PacketLogError.system(operation: operation, errno: error.rawValue)
                }
            }
            parse(UnsafeMutableRawBufferPointer(rebasing: state.buffer[..<received]), keepingPackets: keepingPackets, into: &state.early) { message, code in
                if message.portID == socket.portID, message.sequence == sequence { answer = code }
            }
        }
        switch -(answer ?? 0) {
        case 0:
            return
        // EBUSY: this socket bound the group already. EPERM: another socket owns it — or this
        // thread lacks CAP_NET_ADMIN, which the kernel reports the same way.
        case EBUSY:
            throw PacketLogError.groupInUse(group: group)
        case EPERM where hasNetAdmin():
            throw PacketLogError.groupInUse(group: group)
        case let code:
            throw PacketLogError.refused(operation: operation, errno: code)
        }
    }

    /// Appends the packets of one datagram; reports each netlink error message (an ACK) with its
    /// code (0 or -errno). The kernel ends a batch of several messages with NLMSG_DONE.
    private static func parse(_ datagram: UnsafeMutableRawBufferPointer, keepingPackets: Bool, into packets: inout [LoggedPacket],
                              acknowledgement: (NetlinkMessage, Int32) -> Void) {
        let packetType = subsystem | UInt16(NFULNL_MSG_PACKET.rawValue)
        NetlinkMessages.forEach(in: datagram) { message in
            let header = message.start.assumingMemoryBound(to: nlmsghdr.self)
            if message.type == NetlinkMessage.error {
                var failed: UInt32 = 0
                acknowledgement(message, CNftnl_errorCode(header, &failed))
            } else if message.type == packetType, let packet = loggedPacket(header, keepingPackets: keepingPackets) {
                packets.append(packet)
            }
        }
    }

    /// The prefix and parsed header of one NFULNL_MSG_PACKET; nil when its payload is not an IP
    /// packet Cordon can read.
    private static func loggedPacket(_ message: UnsafeMutablePointer<nlmsghdr>, keepingPackets: Bool) -> LoggedPacket? {
        let genericSize = MemoryLayout<nfgenmsg>.size
        guard Int(message.pointee.nlmsg_len) >= MemoryLayout<nlmsghdr>.size + genericSize else { return nil }
        let tail = UnsafeRawPointer(mnl_nlmsg_get_payload_tail(message)!)
        var attribute = UnsafeRawPointer(mnl_nlmsg_get_payload_offset(message, genericSize)!)
            .assumingMemoryBound(to: nlattr.self)
        var prefix = ""
        var header: PacketHeader?
        var bytes: [UInt8] = []
        while mnl_attr_ok(attribute, Int32(clamping: UnsafeRawPointer(attribute).distance(to: tail))) {
            let payload = UnsafeRawBufferPointer(start: mnl_attr_get_payload(attribute),
                                                 count: Int(mnl_attr_get_payload_len(attribute)))
            switch mnl_attr_get_type(attribute) {
            case UInt16(NFULA_PREFIX.rawValue):
                // Sent with its C string terminator.
                prefix = String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self)
            case UInt16(NFULA_PAYLOAD.rawValue):
                header = PacketHeader(ipPacket: payload)
                if keepingPackets { bytes = Array(payload) }
            default:
                break
            }
            attribute = UnsafeRawPointer(mnl_attr_next(attribute)!).assumingMemoryBound(to: nlattr.self)
        }
        return header.map { LoggedPacket(prefix: prefix, header: $0, bytes: bytes) }
    }

    /// Whether this thread has CAP_NET_ADMIN, which nfnetlink demands of every configuration
    /// message: tells a missing privilege from a group owned by someone else (both EPERM).
    private static func hasNetAdmin() -> Bool {
        guard let file = fopen("/proc/thread-self/status", "r") else { return geteuid() == 0 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.hasPrefix("CapEff:") else { continue }
            let hex = String(text.dropFirst("CapEff:".count).filter(\.isHexDigit))
            let capNetAdmin: UInt64 = 1 << 12
            return (UInt64(hex, radix: 16) ?? 0) & capNetAdmin != 0
        }
        return geteuid() == 0
    }
}

