#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import CordonNetlink
import Synchronization
import SystemPackage

/// A message of a batch the kernel refused, and why.
public struct RefusedMessage: Sendable, CustomStringConvertible {
    /// What the message did, e.g. "add chain inet cordon input".
    public let what: String
    public let errno: Int32
    public var description: String { "\(what): \(String(cString: strerror(errno)))" }
}

/// Failure of a netlink transaction with nf_tables.
public enum NftablesError: FirewallBackendError, CustomStringConvertible {
    /// The kernel refused the batch; nothing in it took effect.
    case refused([RefusedMessage])
    case system(operation: String, errno: Int32)
    case timeout(missingAcks: Int)

    /// Refused, or failed before the batch reached the kernel. Once `sendmsg` returned, the
    /// kernel has processed the batch; a missing or unreadable acknowledgement says nothing of
    /// the outcome.
    public var changedNothing: Bool {
        switch self {
        case .refused: return true
        case .system(let operation, _): return operation != "receive acknowledgements"
        case .timeout: return false
        }
    }

    public var description: String {
        switch self {
        case .refused(let messages):
            return "nf_tables refused the transaction (nothing was changed): "
                + messages.map(\.description).joined(separator: "; ")
        case .system(let operation, let errno):
            return "nf_tables \(operation): \(String(cString: strerror(errno)))"
        case .timeout(let missing):
            return "nf_tables did not acknowledge \(missing) message(s) of the transaction"
        }
    }
}

/// One nf_tables transaction: every message between batch begin and end is applied by the kernel
/// as a whole or not at all. Each message asks for an ACK, and each ACK is collected, so a refusal
/// is traced to the message (by sequence number) that caused it.
final class NetlinkBatch {
    private let batch: OpaquePointer
    private var labels: [UInt32: String] = [:]
    /// Sequence numbers of batch begin and end: a refusal of the framing itself carries one.
    private var framing: Set<UInt32> = []
    /// Process-wide, so that an acknowledgement left over from an earlier transaction on a kept
    /// socket can never be taken for one of this transaction's.
    private static let sequence = Atomic<UInt32>(UInt32(truncatingIfNeeded: time(nil)) << 8)

    init() {
        // Pages become the iovecs of one sendmsg. A message must fit in the overrun space, and
        // set element messages are up to ~50 KiB (see NftablesBackend.elementsPerMessage).
        batch = nftnl_batch_alloc(256 * 1024, 128 * 1024)
        let begin = nextSequence()
        framing.insert(begin)
        nftnl_batch_begin(bufferPointer(), begin)
        nftnl_batch_update(batch)
    }

    deinit { nftnl_batch_free(batch) }

    private func bufferPointer() -> UnsafeMutablePointer<CChar> {
        nftnl_batch_buffer(batch).assumingMemoryBound(to: CChar.self)
    }

    private func nextSequence() -> UInt32 {
        Self.sequence.add(1, ordering: .relaxed).newValue
    }

    /// Set ids name the sets a batch creates until the kernel gives them handles: unique within
    /// the whole transaction, whichever table a set is in.
    private var setIDs: UInt32 = 0
    func nextSetID() -> UInt32 {
        setIDs += 1
        return setIDs
    }

    /// Appends one message; `build` writes its payload after the header.
    func add(_ type: nf_tables_msg_types, flags: Int32, label: String, build: (UnsafeMutablePointer<nlmsghdr>) -> Void) {
        let seq = nextSequence()
        let header = nftnl_nlmsg_build_hdr(bufferPointer(), UInt16(type.rawValue), UInt16(NFPROTO_INET),
                                           UInt16(flags | NLM_F_ACK), seq)!
        build(header)
        labels[seq] = label
        nftnl_batch_update(batch)
    }

    /// Sends the batch in one `sendmsg` and waits for every ACK, on the connection's socket
    /// (or a socket of its own, closed afterwards, without one).
    func commit(on connection: NetlinkConnection? = nil, timeoutSeconds: Int = 10) throws {
        try commit(on: connection, timeoutMilliseconds: timeoutSeconds * 1000)
    }

    func commit(on connection: NetlinkConnection? = nil, timeoutMilliseconds: Int) throws {
        let end = nextSequence()
        framing.insert(end)
        nftnl_batch_end(bufferPointer(), end)
        nftnl_batch_update(batch)
        if let connection {
            try connection.withSocket { try send(on: $0, timeoutMilliseconds: timeoutMilliseconds) }
        } else {
            try send(on: try NetlinkConnection.open(), timeoutMilliseconds: timeoutMilliseconds)
        }
    }

    private func send(on socket: NetlinkSocket, timeoutMilliseconds: Int) throws {
        var iov = [iovec](repeating: iovec(), count: Int(nftnl_batch_iovec_len(batch)))
        nftnl_batch_iovec(batch, &iov, UInt32(iov.count))
        let total = iov.reduce(0) { $0 + $1.iov_len }
        do {
            try socket.setReceiveTimeout(milliseconds: timeoutMilliseconds)
            // The whole batch must fit the send buffer or the kernel sees a truncated transaction.
            let granted = try socket.setSendBuffer(total + 65_536)
            guard granted >= total else { throw NftablesError.system(operation: "size the send buffer for \(total) bytes (got \(granted))", errno: ENOBUFS) }
            // Every success ACK is small, but there is one per message.
            try socket.setReceiveBuffer(max(1 << 20, labels.count * 64))
            let sent = try iov.withUnsafeMutableBufferPointer { try socket.send(vectors: $0) }
            guard sent == total else { throw NftablesError.system(operation: "send batch (\(sent) of \(total) bytes)", errno: EMSGSIZE) }
        } catch let error as Errno {
            throw NftablesError.system(operation: "send batch", errno: error.rawValue)
        }
        try collectAcks(socket: socket)
    }

    private func collectAcks(socket: NetlinkSocket) throws {
        var pending = Set(labels.keys)
        var refused: [RefusedMessage] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while !pending.isEmpty {
            try buffer.withUnsafeMutableBytes { raw in
                let received: Int
                do { received = try socket.receive(into: raw) } catch let error as Errno {
                    if error == .wouldBlock { throw NftablesError.timeout(missingAcks: pending.count) }
                    throw NftablesError.system(operation: "receive acknowledgements", errno: error.rawValue)
                }
                NetlinkMessages.forEach(in: UnsafeMutableRawBufferPointer(rebasing: raw[..<received])) { message in
                    guard message.type == NetlinkMessage.error, message.portID == socket.portID else { return }
                    var seq: UInt32 = 0
                    let code = CNftnl_errorCode(message.start.assumingMemoryBound(to: nlmsghdr.self), &seq)
                    pending.remove(seq)
                    if code != 0, labels[seq] != nil || framing.contains(seq) {
                        refused.append(RefusedMessage(what: labels[seq] ?? "message \(seq)", errno: -code))
                    }
                }
            }
            // After a refusal the kernel still answers every message, but a refusal of the batch
            // framing itself may be the only answer; do not wait for the rest then.
            if !refused.isEmpty && refused.allSatisfy({ $0.what.hasPrefix("message ") }) { break }
        }
        if !refused.isEmpty { throw NftablesError.refused(refused) }
    }
}

/// A netlink socket kept open across transactions. Closing a socket makes the kernel finish
/// destroying what its transactions replaced before the close returns (milliseconds per table);
/// a kept socket lets `replace` return as soon as the kernel acknowledged the new rules. Any
/// failure drops the socket, so that no leftover of a broken exchange reaches the next one.
final class NetlinkConnection: Sendable {
    private let socket = Mutex<NetlinkSocket?>(nil)

    static func open() throws -> NetlinkSocket {
        do {
            let socket = try NetlinkSocket(family: NETLINK_NETFILTER)
            // Error ACKs then carry only the failed message's header, not its (possibly large) payload.
            try socket.setOption(level: SOL_NETLINK, NETLINK_CAP_ACK, 1)
            return socket
        } catch {
            throw NftablesError.system(operation: "open netlink socket", errno: error.rawValue)
        }
    }

    /// One transaction at a time on the socket.
    func withSocket<T>(_ body: (NetlinkSocket) throws -> T) throws -> T {
        try socket.withLock { held in
            let open = try held ?? Self.open()
            held = open
            do {
                return try body(open)
            } catch {
                held = nil
                throw error
            }
        }
    }
}
