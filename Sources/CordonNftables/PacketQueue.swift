#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import CordonNetlink
import SystemPackage
import Synchronization

/// The packets a `queue` rule hands over (nfnetlink_queue, through libmnl), each waiting in the
/// kernel until `accept` lets it go. The queue is configured fail-open: when it is full the
/// kernel accepts instead of dropping, and the rules' `bypass` accepts when no program is bound,
/// so the agent can delay what it holds but never lose it.
///
/// One thread reads and decides; `close` may come from any thread.
public final class PacketQueue: Sendable {
    public struct Packet: Sendable {
        /// The kernel's id: verdicts name it (a batch verdict, every id up to it).
        public var id: UInt32
        /// The packet from its network header on.
        public var bytes: [UInt8]
    }

    public let number: UInt16
    private let pipe: WakePipe
    private let state: Mutex<ReadState>

    private struct ReadState {
        var socket: NetlinkSocket?
        var buffer: UnsafeMutableRawBufferPointer
    }

    private static let subsystem = UInt16(NFNL_SUBSYS_QUEUE) << 8
    /// A datagram can hold several whole packets (up to 64 KiB each).
    private static let receiveBytes = 1 << 18

    /// - Parameters:
    ///   - maxLength: packets the kernel keeps waiting before it accepts the next ones unheld.
    /// - Throws: `PacketLogError.groupInUse` when another program holds the queue.
    public init(number: UInt16, receiveBuffer: Int = 8 << 20, maxLength: UInt32 = 4096) throws {
        let socket: NetlinkSocket
        do {
            socket = try NetlinkSocket(family: NETLINK_NETFILTER, nonBlocking: true)
            try socket.setReceiveBuffer(receiveBuffer)
            // ENOBUFS would otherwise end the reads; a verdict not sent is the kernel's problem
            // only until the fail-open queue fills.
            try socket.setOption(level: SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            pipe = try WakePipe()
        } catch {
            throw PacketLogError.system(operation: "open the netlink socket for queue \(number)", errno: error.rawValue)
        }
        var readState = ReadState(socket: socket, buffer: .allocate(byteCount: Self.receiveBytes, alignment: 16))
        do {
            try Self.configure(&readState, number: number, operation: "bind queue \(number)") { message in
                // struct nfqnl_msg_config_cmd: command, pad, be16 protocol family (unused now).
                var command: [UInt8] = [UInt8(NFQNL_CFG_CMD_BIND.rawValue), 0, 0, 0]
                mnl_attr_put(message, UInt16(NFQA_CFG_CMD.rawValue), command.count, &command)
            }
            try Self.configure(&readState, number: number, operation: "configure queue \(number)") { message in
                // struct nfqnl_msg_config_params is packed: be32 copy range, copy mode.
                let range: UInt32 = 0xFFFF
                var params: [UInt8] = [UInt8(range >> 24), UInt8((range >> 16) & 0xFF), UInt8((range >> 8) & 0xFF), UInt8(range & 0xFF),
                                       UInt8(NFQNL_COPY_PACKET.rawValue)]
                mnl_attr_put(message, UInt16(NFQA_CFG_PARAMS.rawValue), params.count, &params)
                mnl_attr_put_u32(message, UInt16(NFQA_CFG_QUEUE_MAXLEN.rawValue), maxLength.bigEndian)
                mnl_attr_put_u32(message, UInt16(NFQA_CFG_FLAGS.rawValue), UInt32(NFQA_CFG_F_FAIL_OPEN).bigEndian)
                mnl_attr_put_u32(message, UInt16(NFQA_CFG_MASK.rawValue), UInt32(NFQA_CFG_F_FAIL_OPEN).bigEndian)
            }
        } catch {
            readState.buffer.deallocate()
            throw error
        }
        self.number = number
        state = Mutex(readState)
    }

    deinit {
        close()
        state.withLock { $0.buffer.deallocate() }
    }

    /// Unbinds by closing the socket: the kernel then accepts what was still held (`bypass`
    /// applies from the next packet on). Idempotent.
    public func close() {
        pipe.wake()
        state.withLock { $0.socket = nil }
    }

    /// The packets of one datagram; waits up to `milliseconds` when none is queued (or until woken).
    public func next(milliseconds: Int32) throws -> [Packet] {
        try state.withLock { state in
            guard let socket = state.socket else { throw PacketLogError.closed }
            var packets = try Self.receive(&state, number: number)
            guard packets.isEmpty else { return packets }
            let ready: (readable: Bool, woken: Bool)
            do { ready = try socket.waitReadable(milliseconds: milliseconds, wake: pipe) } catch let error as Errno {
                throw PacketLogError.system(operation: "wait for queue \(number)", errno: error.rawValue)
            }
            if ready.woken { pipe.drain() }
            guard ready.readable else { return [] }
            packets = try Self.receive(&state, number: number)
            return packets
        }
    }

    /// Lets every held packet up to and including `id` go on (one batch verdict).
    public func accept(through id: UInt32) throws {
        try state.withLock { state in
            guard let socket = state.socket else { throw PacketLogError.closed }
            var buffer = [UInt8](repeating: 0, count: 128)
            do {
                _ = try buffer.withUnsafeMutableBytes { raw in
                    let message = Self.header(raw.baseAddress!, type: NFQNL_MSG_VERDICT_BATCH.rawValue, number: number, acknowledged: false)
                    // struct nfqnl_msg_verdict_hdr: be32 verdict, be32 id.
                    var verdict: [UInt8] = withUnsafeBytes(of: UInt32(NF_ACCEPT).bigEndian, Array.init) + withUnsafeBytes(of: id.bigEndian, Array.init)
                    mnl_attr_put(message, UInt16(NFQA_VERDICT_HDR.rawValue), verdict.count, &verdict)
                    return try socket.send(UnsafeRawBufferPointer(start: message, count: Int(message.pointee.nlmsg_len)))
                }
            } catch let error as Errno {
                throw PacketLogError.system(operation: "verdict on queue \(number)", errno: error.rawValue)
            }
        }
    }

    private static func receive(_ state: inout ReadState, number: UInt16) throws -> [Packet] {
        guard let socket = state.socket else { throw PacketLogError.closed }
        let received: Int
        do { received = try socket.receive(into: state.buffer, wait: false) } catch {
            if error == .wouldBlock { return [] }
            throw PacketLogError.system(operation: "read queue \(number)", errno: error.rawValue)
        }
        var packets: [Packet] = []
        let packetType = subsystem | UInt16(NFQNL_MSG_PACKET.rawValue)
        NetlinkMessages.forEach(in: UnsafeMutableRawBufferPointer(rebasing: state.buffer[..<received])) { message in
            guard message.type == packetType else { return }
            if let packet = parse(message.start.assumingMemoryBound(to: nlmsghdr.self)) { packets.append(packet) }
        }
        return packets
    }

    private static func parse(_ message: UnsafeMutablePointer<nlmsghdr>) -> Packet? {
        let genericSize = MemoryLayout<nfgenmsg>.size
        guard Int(message.pointee.nlmsg_len) >= MemoryLayout<nlmsghdr>.size + genericSize else { return nil }
        let tail = UnsafeRawPointer(mnl_nlmsg_get_payload_tail(message)!)
        var attribute = UnsafeRawPointer(mnl_nlmsg_get_payload_offset(message, genericSize)!).assumingMemoryBound(to: nlattr.self)
        var id: UInt32?
        var bytes: [UInt8] = []
        while mnl_attr_ok(attribute, Int32(clamping: UnsafeRawPointer(attribute).distance(to: tail))) {
            let payload = UnsafeRawBufferPointer(start: mnl_attr_get_payload(attribute), count: Int(mnl_attr_get_payload_len(attribute)))
            switch mnl_attr_get_type(attribute) {
            case UInt16(NFQA_PACKET_HDR.rawValue) where payload.count >= 4:
                id = UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3])
            case UInt16(NFQA_PAYLOAD.rawValue):
                bytes = Array(payload)
            default:
                break
            }
            attribute = UnsafeRawPointer(mnl_attr_next(attribute)!).assumingMemoryBound(to: nlattr.self)
        }
        return id.map { Packet(id: $0, bytes: bytes) }
    }

    private static func header(_ buffer: UnsafeMutableRawPointer, type: UInt32, number: UInt16, acknowledged: Bool,
                               sequence: UInt32 = 0) -> UnsafeMutablePointer<nlmsghdr> {
        let message = mnl_nlmsg_put_header(buffer)!
        message.pointee.nlmsg_type = subsystem | UInt16(type)
        message.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | (acknowledged ? NLM_F_ACK : 0))
        message.pointee.nlmsg_seq = sequence
        let generic = mnl_nlmsg_put_extra_header(message, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        generic.pointee.nfgen_family = UInt8(AF_UNSPEC)
        generic.pointee.version = UInt8(NFNETLINK_V0)
        generic.pointee.res_id = number.bigEndian
        return message
    }

    /// One configuration message and its ACK (5 s at most). Packets cannot arrive before the bind.
    private static func configure(_ state: inout ReadState, number: UInt16, operation: String,
                                  attributes: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        guard let socket = state.socket else { throw PacketLogError.closed }
        let sequence = UInt32.random(in: 1...UInt32.max)
        var request = [UInt8](repeating: 0, count: 256)
        do {
            _ = try request.withUnsafeMutableBytes { raw in
                let message = header(raw.baseAddress!, type: NFQNL_MSG_CONFIG.rawValue, number: number, acknowledged: true, sequence: sequence)
                attributes(message)
                return try socket.send(UnsafeRawBufferPointer(start: message, count: Int(message.pointee.nlmsg_len)))
            }
        } catch let error as Errno {
            throw PacketLogError.system(operation: operation, errno: error.rawValue)
        }
        for _ in 0..<50 {
            guard (try? socket.waitReadable(milliseconds: 100))?.readable == true else { continue }
            let received: Int
            do { received = try socket.receive(into: state.buffer, wait: false) } catch {
                if error == .wouldBlock { continue }
                throw PacketLogError.system(operation: operation, errno: error.rawValue)
            }
            var answer: Int32?
            NetlinkMessages.forEach(in: UnsafeMutableRawBufferPointer(rebasing: state.buffer[..<received])) { message in
                guard message.type == NetlinkMessage.error, message.sequence == sequence else { return }
                var failed: UInt32 = 0
                answer = CNftnl_errorCode(message.start.assumingMemoryBound(to: nlmsghdr.self), &failed)
            }
            switch answer.map({ -$0 }) {
            case nil: continue
            case 0: return
            case EBUSY, EPERM: throw PacketLogError.groupInUse(group: number)
            case let code?: throw PacketLogError.refused(operation: operation, errno: code)
            }
        }
        throw PacketLogError.timeout(operation: operation)
    }
}
