import CordonCore
import Testing

@Suite struct DNSCaptureTests {
    static let resolver: [UInt8] = [192, 0, 2, 53], host: [UInt8] = [192, 0, 2, 10]

    static func ipv4(_ transport: UInt8, _ segment: [UInt8]) -> [UInt8] {
        let total = 20 + segment.count
        return [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, transport, 0, 0] + resolver + host + segment
    }

    static func udp(_ payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return ipv4(17, [0, 53, 0xC3, 0x50, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0] + payload)
    }

    static func tcp(seq: UInt32, flags: UInt8 = 0x18, _ payload: [UInt8] = []) -> [UInt8] {
        let s = [UInt8(seq >> 24), UInt8((seq >> 16) & 0xFF), UInt8((seq >> 8) & 0xFF), UInt8(seq & 0xFF)]
        return ipv4(6, [0, 53, 0xC3, 0x51] + s + [0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0] + payload)
    }

    static func framed(_ message: [UInt8]) -> [UInt8] { [UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message }

    @Test("a UDP datagram from port 53 is one message, the IP padding past the total length left out")
    func udpMessage() {
        var streams = DNSStreams()
        let packet = Self.udp([1, 2, 3, 4]) + [0, 0, 0]   // Ethernet-style padding after the datagram
        let result = streams.feed(packet, at: 0)
        #expect(result.resolver == IPAddress("192.0.2.53"))
        #expect(result.messages == [[1, 2, 3, 4]])
    }

    @Test("DNS over TCP: messages are cut at their length prefixes across segments; a retransmission is not read twice")
    func tcpReassembly() {
        var streams = DNSStreams()
        let isn: UInt32 = 0xFFFF_FFF0   // the sequence numbers wrap during the stream
        #expect(streams.feed(Self.tcp(seq: isn, flags: 0x12), at: 0).messages.isEmpty, "SYN-ACK")
        let first = Array(repeating: UInt8(7), count: 30), second = Array(repeating: UInt8(9), count: 5)
        let stream = Self.framed(first) + Self.framed(second)
        var next = isn &+ 1
        var got: [[UInt8]] = []
        for chunk in [Array(stream[0..<10]), Array(stream[10..<33]), Array(stream[33...])] {
            got += streams.feed(Self.tcp(seq: next, chunk), at: 0).messages
            if got.isEmpty {
                // The same segment again: a retransmission.
                #expect(streams.feed(Self.tcp(seq: next, chunk), at: 0).messages.isEmpty)
            }
            next = next &+ UInt32(chunk.count)
        }
        #expect(got == [first, second])
        #expect(streams.counters.messages == 2)
        #expect(streams.feed(Self.tcp(seq: next, flags: 0x11), at: 0).messages.isEmpty, "FIN")
        #expect(streams.streamCount == 0)
    }

    @Test("a gap gives the stream up (counted); a stream joined without its SYN-ACK is ignored")
    func tcpGap() {
        var streams = DNSStreams()
        _ = streams.feed(Self.tcp(seq: 100, flags: 0x12), at: 0)
        #expect(streams.feed(Self.tcp(seq: 150, Self.framed([1, 2, 3])), at: 0).messages.isEmpty)
        #expect(streams.counters.abandonedStreams == 1)
        #expect(streams.streamCount == 0)
        #expect(streams.feed(Self.tcp(seq: 101, Self.framed([1, 2, 3])), at: 0).messages.isEmpty, "no stream any more")
    }

    @Test("streams are bounded: the least recently active is pushed out, idle ones expire")
    func streamBound() {
        var streams = DNSStreams(streamLimit: 2)
        for (index, port) in [UInt8(1), 2, 3].enumerated() {
            var packet = Self.tcp(seq: 0, flags: 0x12)
            packet[23] = port   // the local port's low byte
            _ = streams.feed(packet, at: Int64(index))
        }
        #expect(streams.streamCount == 2)
        #expect(streams.counters.abandonedStreams == 1)
        streams.expire(idleFor: 60, at: 100)
        #expect(streams.streamCount == 0)
    }

    @Test("what is not a whole IP/UDP/TCP packet is counted unreadable, never read past its end")
    func unreadable() {
        var streams = DNSStreams()
        var fragment = Self.udp([1, 2, 3])
        fragment[6] = 0x20   // more fragments
        for packet in [[], [0x45], Array(Self.udp([1, 2, 3]).prefix(25)), fragment, [0x60] + Array(repeating: 0, count: 20)] {
            #expect(streams.feed(packet, at: 0).messages.isEmpty)
        }
        #expect(streams.counters.unreadable == 5)
    }

    @Test("the capture rule copies only established answers from the resolvers' port 53, and decides nothing")
    func captureRule() {
        let capture = CordonTables.NameCapture(resolvers: [IPAddress("192.0.2.53")!, IPAddress("2001:db8::53")!], group: 7101)
        let table = CordonTables.discovery(names: capture)
        let text = table.nftText
        #expect(text.contains("ct state established meta nfproto ipv4 ip saddr . meta l4proto . th sport @dns_v4 log prefix \"cordon-dns\" group 7101"))
        #expect(text.contains("ip6 saddr . meta l4proto . th sport @dns_v6"))
        #expect(table.set(named: "dns_v4")?.elements.count == 2, "udp and tcp")
        let input = table.chains.first { $0.name == "input" }!
        #expect(input.rules.filter { $0.log?.prefix == CordonTables.nameLogPrefix }.allSatisfy { $0.verdict == nil })
        #expect(CordonTables.NameCapture.group(after: 7100) == 7101 && CordonTables.NameCapture.group(after: .max) == .max - 1)
        let enforcing = CordonTables.enforcement(ruleset: Ruleset(networks: []), management: ManagementChannel(), openAfter: 30, names: capture)
        let first = enforcing.chains.first { $0.name == "input" }!.rules.first
        #expect(first?.log?.prefix == CordonTables.nameLogPrefix, "first, before the confirmation switch's rule")
        #expect(CordonTables.discovery(names: .init(resolvers: [], group: 1)) == CordonTables.discovery())
    }
}
