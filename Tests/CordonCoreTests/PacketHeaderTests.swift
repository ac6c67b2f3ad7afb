import CordonCore
import Testing

/// Packets built byte by byte, as the kernel copies them to an NFLOG group.
@Suite struct PacketHeaderTests {
    static let peer4: [UInt8] = [192, 0, 2, 20]
    static let host4: [UInt8] = [192, 0, 2, 10]
    /// 2001:db8::20 and 2001:db8::10.
    static let peer6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x20]
    static let host6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x10]

    /// An IPv4 header with `optionWords` 4-byte words of options (NOPs), then `payload`.
    static func ipv4(_ proto: UInt8, optionWords: Int = 0, fragmentOffset: UInt16 = 0, moreFragments: Bool = false,
                     _ payload: [UInt8]) -> [UInt8] {
        let headerLength = 20 + optionWords * 4
        let total = headerLength + payload.count
        let flags = (moreFragments ? 0x2000 : 0) | fragmentOffset
        var bytes: [UInt8] = [0x40 | UInt8(headerLength / 4), 0, UInt8(total >> 8), UInt8(total & 0xFF),
                              0x12, 0x34, UInt8(flags >> 8), UInt8(flags & 0xFF), 64, proto, 0, 0]
        bytes += peer4 + host4
        bytes += [UInt8](repeating: 1, count: optionWords * 4)
        return bytes + payload
    }

    /// An IPv6 header whose next header is `next`, then `payload` (extension headers and all).
    static func ipv6(_ next: UInt8, _ payload: [UInt8]) -> [UInt8] {
        [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), next, 64] + peer6 + host6 + payload
    }

    /// Source port, destination port, then filler up to a TCP header's 20 bytes.
    static func ports(_ source: UInt16, _ destination: UInt16, length: Int = 20) -> [UInt8] {
        [UInt8(source >> 8), UInt8(source & 0xFF), UInt8(destination >> 8), UInt8(destination & 0xFF)]
            + [UInt8](repeating: 0, count: length - 4)
    }

    @Test func ipv4TCPWithOptionsHonoursTheHeaderLength() throws {
        let packet = Self.ipv4(IPProtocolNumber.tcp, optionWords: 1, Self.ports(51_234, 9))
        let header = try #require(PacketHeader(ipPacket: packet))
        #expect(header == PacketHeader(family: .ipv4, transport: IPProtocolNumber.tcp,
                                       source: IPAddress("192.0.2.20")!, destination: IPAddress("192.0.2.10")!,
                                       sourcePort: 51_234, destinationPort: 9))
    }

    @Test func ipv4UDP() throws {
        let header = try #require(PacketHeader(ipPacket: Self.ipv4(IPProtocolNumber.udp, Self.ports(40_000, 53, length: 8))))
        #expect(header.family == .ipv4)
        #expect(header.transport == IPProtocolNumber.udp)
        #expect(header.sourcePort == 40_000)
        #expect(header.destinationPort == 53)
        #expect(header.icmpType == nil)
    }

    @Test func ipv4ICMPEcho() throws {
        let header = try #require(PacketHeader(ipPacket: Self.ipv4(IPProtocolNumber.icmp, [8, 0, 0xF7, 0xFF, 0, 1, 0, 1])))
        #expect(header.transport == IPProtocolNumber.icmp)
        #expect(header.icmpType == 8)
        #expect(header.icmpCode == 0)
        #expect(header.sourcePort == nil && header.destinationPort == nil)
        #expect(header.source.description == "192.0.2.20")
    }

    @Test func ipv4FirstFragmentHasPortsLaterOnesDoNot() throws {
        let first = try #require(PacketHeader(ipPacket: Self.ipv4(IPProtocolNumber.udp, moreFragments: true, Self.ports(1, 514, length: 8))))
        #expect(first.destinationPort == 514)
        // Offset 185 (× 8 bytes): the payload is the middle of the datagram, whatever it looks like.
        let later = try #require(PacketHeader(ipPacket: Self.ipv4(IPProtocolNumber.udp, fragmentOffset: 185, Self.ports(1, 514, length: 8))))
        #expect(later.transport == IPProtocolNumber.udp)
        #expect(later.destination.description == "192.0.2.10")
        #expect(later.sourcePort == nil && later.destinationPort == nil)
    }

    @Test func ipv6TCP() throws {
        let header = try #require(PacketHeader(ipPacket: Self.ipv6(IPProtocolNumber.tcp, Self.ports(51_234, 9))))
        #expect(header == PacketHeader(family: .ipv6, transport: IPProtocolNumber.tcp,
                                       source: IPAddress("2001:db8::20")!, destination: IPAddress("2001:db8::10")!,
                                       sourcePort: 51_234, destinationPort: 9))
    }

    @Test func ipv6WalksHopByHopAndFragmentHeadersToUDP() throws {
        // Hop-by-hop (length 0: 8 bytes, a PadN), then a first fragment with more to come.
        let hopByHop: [UInt8] = [44, 0, 1, 4, 0, 0, 0, 0]
        let fragment: [UInt8] = [IPProtocolNumber.udp, 0, 0x00, 0x01, 0xAB, 0xCD, 0xEF, 0x01]
        let header = try #require(PacketHeader(ipPacket: Self.ipv6(0, hopByHop + fragment + Self.ports(5353, 9, length: 8))))
        #expect(header.transport == IPProtocolNumber.udp)
        #expect(header.sourcePort == 5353)
        #expect(header.destinationPort == 9)

        // The same chain in a later fragment (offset 1448 bytes): the protocol, no ports.
        let laterFragment: [UInt8] = [IPProtocolNumber.udp, 0, 0x05, 0xA8, 0xAB, 0xCD, 0xEF, 0x01]
        let later = try #require(PacketHeader(ipPacket: Self.ipv6(0, hopByHop + laterFragment + Self.ports(5353, 9, length: 8))))
        #expect(later.transport == IPProtocolNumber.udp)
        #expect(later.sourcePort == nil && later.destinationPort == nil)
    }

    @Test func ipv6RoutingDestinationOptionsAndAuthenticationHeaders() throws {
        let routing: [UInt8] = [60, 2, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16) // 24 bytes
        let destinationOptions: [UInt8] = [51, 0, 1, 4, 0, 0, 0, 0]
        let authentication: [UInt8] = [IPProtocolNumber.tcp, 4] + [UInt8](repeating: 0, count: 22) // (4 + 2) × 4 bytes
        let header = try #require(PacketHeader(ipPacket: Self.ipv6(43, routing + destinationOptions + authentication + Self.ports(40_000, 443))))
        #expect(header.transport == IPProtocolNumber.tcp)
        #expect(header.destinationPort == 443)
    }

    @Test func ipv6ExtensionChainIsBounded() {
        // Nine hop-by-hop headers in a row, each pointing at another.
        let chain = [UInt8]((0..<9).flatMap { _ in [UInt8(0), 0, 1, 4, 0, 0, 0, 0] })
        #expect(PacketHeader(ipPacket: Self.ipv6(0, chain + Self.ports(1, 2))) == nil)
    }

    @Test func icmpv6() throws {
        let header = try #require(PacketHeader(ipPacket: Self.ipv6(IPProtocolNumber.icmpv6, [128, 0, 0x12, 0x34, 0, 1, 0, 1])))
        #expect(header.family == .ipv6)
        #expect(header.transport == IPProtocolNumber.icmpv6)
        #expect(header.icmpType == 128)
        #expect(header.icmpCode == 0)
    }

    @Test func notIPIsRejected() {
        #expect(PacketHeader(ipPacket: []) == nil)
        #expect(PacketHeader(ipPacket: [0x50] + [UInt8](repeating: 0, count: 59)) == nil)
        // IHL below 5 is not a valid IPv4 header.
        var bad = Self.ipv4(IPProtocolNumber.tcp, Self.ports(1, 2))
        bad[0] = 0x44
        #expect(PacketHeader(ipPacket: bad) == nil)
    }

    /// Every prefix of every packet above: nil, or a header whose later fields are nil; never a
    /// read past the end (each prefix is copied into a buffer of exactly its length).
    @Test func everyTruncationIsSafe() throws {
        let hopByHop: [UInt8] = [44, 0, 1, 4, 0, 0, 0, 0]
        let fragment: [UInt8] = [IPProtocolNumber.udp, 0, 0x00, 0x01, 0xAB, 0xCD, 0xEF, 0x01]
        let packets: [[UInt8]] = [
            Self.ipv4(IPProtocolNumber.tcp, optionWords: 1, Self.ports(51_234, 9)),
            Self.ipv4(IPProtocolNumber.icmp, [8, 0, 0, 0, 0, 1, 0, 1]),
            Self.ipv6(IPProtocolNumber.tcp, Self.ports(51_234, 9)),
            Self.ipv6(0, hopByHop + fragment + Self.ports(5353, 9, length: 8)),
            Self.ipv6(IPProtocolNumber.icmpv6, [128, 0, 0, 0]),
        ]
        for packet in packets {
            let full = try #require(PacketHeader(ipPacket: packet))
            for length in 0..<packet.count {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 1)
                defer { buffer.deallocate() }
                buffer.copyBytes(from: packet[..<length])
                guard let cut = PacketHeader(ipPacket: UnsafeRawBufferPointer(buffer)) else { continue }
                #expect(cut.family == full.family && cut.source == full.source && cut.destination == full.destination)
                #expect(cut.transport == full.transport)
                #expect(cut.destinationPort == nil || cut.destinationPort == full.destinationPort)
                #expect(cut.icmpType == nil || cut.icmpType == full.icmpType)
            }
            // The network header alone is enough for the addresses, unless extension headers
            // follow: then the transport protocol is unknown.
            let isIPv4 = packet[0] >> 4 == 4
            let networkHeader = isIPv4 ? Int(packet[0] & 0x0F) * 4 : 40
            let cut = PacketHeader(ipPacket: Array(packet[..<networkHeader]))
            #expect((cut != nil) == (isIPv4 || packet[6] != 0))
        }
    }
}
