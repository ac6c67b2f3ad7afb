import CordonCore
import CordonLab
import CordonNftables
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The NFLOG reader against the real kernel: rules in a throwaway namespace log what they drop and
/// reject, real packets from socat hit them, and the test checks exactly what the reader saw.
@Suite(.serialized, .enabled(if: Integration.shouldRun, Integration.skipNote))
struct PacketLogTests {
    static let group: UInt16 = 7100
    static let hostV4 = "192.0.2.10", hostV6 = "2001:db8::10"
    static let peerV4 = "192.0.2.20", peerV6 = "2001:db8::20"

    /// The shape of Cordon's enforcement tails: log to the group, then drop (input) or reject
    /// (output). Only port 9 is affected, so neighbour discovery and the like stay out of the log.
    static let rules = """
        table inet logtest {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 9 counter log prefix "cordon-in" group \(group) drop
            }
            chain output {
                type filter hook output priority 0; policy accept;
                udp dport 9 counter log prefix "cordon-out" group \(group) reject
            }
        }
        """

    /// Two namespaces, `host` with the logging table.
    static func makeLab() throws -> (lab: Lab, host: String, peer: String) {
        let lab = try Lab()
        do {
            let host = try lab.namespace("host"), peer = try lab.namespace("peer")
            try lab.connect(host, ["\(hostV4)/24", "\(hostV6)/64"], peer, ["\(peerV4)/24", "\(peerV6)/64"])
            let loaded = try lab.run(host, ["nft", "-f", "-"], input: rules)
            guard loaded.succeeded else { throw LabError("nft -f: \(loaded.stderr)") }
            return (lab, host, peer)
        } catch {
            lab.cleanup()
            throw error
        }
    }

    /// Reads until every expected header was seen (source ports aside: they are ephemeral) or
    /// `seconds` passed.
    static func read(_ log: PacketLog, expecting expected: Set<LoggedPacket>, seconds: Double = 5)
        throws -> (packets: [LoggedPacket], overruns: Int) {
        var packets: [LoggedPacket] = [], overruns = 0
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline, !expected.isSubset(of: Set(packets.map(withoutSourcePort))) {
            if try log.next(wait: true, { packets.append($0) }) == .overrun { overruns += 1 }
        }
        return (packets, overruns)
    }

    static func withoutSourcePort(_ packet: LoggedPacket) -> LoggedPacket {
        var packet = packet
        packet.header.sourcePort = nil
        return packet
    }

    static func expected(_ prefix: String, _ transport: UInt8, from source: String, to destination: String, port: UInt16) -> LoggedPacket {
        let source = IPAddress(source)!, destination = IPAddress(destination)!
        return LoggedPacket(prefix: prefix, header: PacketHeader(family: source.family, transport: transport,
                                                                source: source, destination: destination,
                                                                destinationPort: port))
    }

    @Test func readsDroppedAndRejectedPacketsOfBothFamilies() throws {
        let (lab, host, peer) = try Self.makeLab()
        defer { lab.cleanup() }
        let log = try lab.inNamespace(host) { try PacketLog(group: Self.group) }
        defer { log.close() }
        #expect(log.receiveBufferSize >= 8 << 20)

        // Dropped on input: the connection attempt times out (0.5 s: before the SYN's first
        // retransmission, though a retransmission would be logged the same way).
        for target in ["TCP:\(Self.hostV4):9", "TCP6:[\(Self.hostV6)]:9"] {
            let result = try lab.run(peer, ["socat", "-u", "/dev/null", "\(target),connect-timeout=0.5"], timeout: 10)
            #expect(!result.succeeded, "the input chain must drop \(target)")
        }
        // Rejected on output: one datagram each (socat sends what it reads, so not /dev/null).
        for target in ["UDP:\(Self.peerV4):9", "UDP6:[\(Self.peerV6)]:9"] {
            _ = try lab.run(host, ["socat", "-u", "STDIN", target], timeout: 10, input: "x")
        }

        let expected: Set<LoggedPacket> = [
            Self.expected("cordon-in", IPProtocolNumber.tcp, from: Self.peerV4, to: Self.hostV4, port: 9),
            Self.expected("cordon-in", IPProtocolNumber.tcp, from: Self.peerV6, to: Self.hostV6, port: 9),
            Self.expected("cordon-out", IPProtocolNumber.udp, from: Self.hostV4, to: Self.peerV4, port: 9),
            Self.expected("cordon-out", IPProtocolNumber.udp, from: Self.hostV6, to: Self.peerV6, port: 9),
        ]
        let (packets, overruns) = try Self.read(log, expecting: expected)
        #expect(overruns == 0)
        #expect(Set(packets.map(Self.withoutSourcePort)) == expected, "logged: \(packets)")
        for packet in packets {
            #expect((packet.header.sourcePort ?? 0) >= 1024, "the client's ephemeral port: \(packet)")
            #expect(packet.header.icmpType == nil)
        }
        // Nothing else was logged: the socket is empty now.
        var late: [LoggedPacket] = []
        #expect(try log.next(wait: true) { late.append($0) } == .idle)
        #expect(late.isEmpty, "unexpected: \(late)")
    }

    @Test func aGroupHasOneReaderPerNamespace() throws {
        let (lab, host, peer) = try Self.makeLab()
        defer { lab.cleanup() }
        let first = try lab.inNamespace(host) { try PacketLog(group: Self.group) }

        let second = #expect(throws: PacketLogError.groupInUse(group: Self.group)) {
            try lab.inNamespace(host) { try PacketLog(group: Self.group) }
        }
        #expect(second.map { "\($0)" }?.contains("NFLOG group \(Self.group) is already bound") == true)

        // Groups are per namespace: the peer's 7100 is another group.
        let elsewhere = try lab.inNamespace(peer) { try PacketLog(group: Self.group) }
        elsewhere.close()

        // Closing releases the group at once.
        first.close()
        #expect(throws: PacketLogError.closed) { try first.next(wait: false) { _ in } }
        let again = try lab.inNamespace(host) { try PacketLog(group: Self.group) }
        again.close()
    }

    @Test func aFullSocketBufferIsReportedAsAnOverrun() throws {
        let (lab, host, _) = try Self.makeLab()
        defer { lab.cleanup() }
        // The smallest buffer the kernel allows (it raises 1 to its minimum): it takes one batch,
        // and every batch after that is dropped until the reader catches up.
        let log = try lab.inNamespace(host) { try PacketLog(group: Self.group, receiveBuffer: 1, flushTimeout: 0.01) }
        defer { log.close() }
        // Five datagrams far enough apart (50 ms, flush timeout 10 ms) to travel as five batches.
        for _ in 0..<5 {
            _ = try lab.run(host, ["socat", "-u", "STDIN", "UDP:\(Self.peerV4):9"], timeout: 10, input: "x")
            usleep(50_000)
        }
        var packets = 0, overruns = 0
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline, overruns == 0 || packets == 0 {
            if try log.next(wait: true, { _ in packets += 1 }) == .overrun { overruns += 1 }
        }
        #expect(overruns >= 1)
        #expect(packets >= 1 && packets < 5, "read \(packets) of 5")
    }

    @Test func wakerEndsAWait() throws {
        let (lab, host, _) = try Self.makeLab()
        defer { lab.cleanup() }
        let log = try lab.inNamespace(host) { try PacketLog(group: Self.group, idleTimeout: 30) }
        defer { log.close() }
        let waker = log.waker
        Thread.detachNewThread {
            usleep(200_000)
            waker.wake()
        }
        let start = ContinuousClock.now
        #expect(try log.next { _ in } == .idle)
        #expect(ContinuousClock.now - start < .seconds(20), "ended by the waker, not by the 30 s idle timeout")
        #expect(try log.next(wait: false) { _ in } == .idle)
    }
}
