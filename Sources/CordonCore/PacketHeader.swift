/// The addresses and ports of one IP packet, read from its raw bytes (as the kernel logs them to an
/// NFLOG group). Only what a flow record needs: no checksums, no lengths, no options.
///
/// Logged packets are cut at the copy range and may be fragments, so every field past the network
/// header is optional: a port that is not in the bytes is nil rather than guessed.
public struct PacketHeader: Hashable, Sendable {
    public var family: AddressFamily
    /// The IP protocol number of the transport header (IPv6: after the extension headers).
    public var transport: UInt8
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?

    public init(family: AddressFamily, transport: UInt8, source: IPAddress, destination: IPAddress,
                sourcePort: UInt16? = nil, destinationPort: UInt16? = nil, icmpType: UInt8? = nil, icmpCode: UInt8? = nil) {
        self.family = family
        self.transport = transport
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.icmpType = icmpType
        self.icmpCode = icmpCode
    }

    /// IPv6 extension headers walked before giving up: real packets carry two or three, and a
    /// crafted chain must not make the reader loop through the whole copy.
    static let extensionHeaderLimit = 8

    /// Parses an IPv4 or IPv6 packet starting at its network header. Returns nil when the bytes do
    /// not hold a complete network header or (IPv6) the chain of extension headers is cut before
    /// the transport protocol is known; returns nil ports or ICMP fields when the transport header
    /// is cut, or when the packet is a fragment other than the first (only the first has them).
    public init?(ipPacket bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first else { return nil }
        switch first >> 4 {
        case 4: self.init(ipv4: bytes)
        case 6: self.init(ipv6: bytes)
        default: return nil
        }
    }

    public init?(ipPacket bytes: [UInt8]) {
        guard let header = bytes.withUnsafeBytes({ PacketHeader(ipPacket: $0) }) else { return nil }
        self = header
    }

    private init?(ipv4 bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 20 else { return nil }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        guard headerLength >= 20,
              let source = IPAddress(bytes: bytes[12..<16]),
              let destination = IPAddress(bytes: bytes[16..<20])
        else { return nil }
        self.init(family: .ipv4, transport: bytes[9], source: source, destination: destination)
        let fragmentOffset = (UInt16(bytes[6]) << 8 | UInt16(bytes[7])) & 0x1FFF
        if fragmentOffset == 0 { readTransport(bytes, at: headerLength) }
    }

    private init?(ipv6 bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 40,
              let source = IPAddress(bytes: bytes[8..<24]),
              let destination = IPAddress(bytes: bytes[24..<40])
        else { return nil }
        var next = bytes[6]
        var offset = 40
        var firstFragment = true
        var walked = 0
        walk: while true {
            switch next {
            case 0, 43, 60, 51, 44:
                // Every extension header starts with the next header and a length byte.
                guard walked < Self.extensionHeaderLimit, offset + 2 <= bytes.count else { return nil }
                walked += 1
                let length: Int
                switch next {
                case 44:
                    // Fragment: fixed 8 bytes; the offset is the top 13 bits of bytes 2-3.
                    guard offset + 4 <= bytes.count else { return nil }
                    length = 8
                    if (UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])) >> 3 != 0 { firstFragment = false }
                case 51:
                    // AH counts 4-byte words, minus 2.
                    length = (Int(bytes[offset + 1]) + 2) * 4
                default:
                    // Hop-by-hop, routing, destination options count 8-byte words, minus 1.
                    length = (Int(bytes[offset + 1]) + 1) * 8
                }
                next = bytes[offset]
                offset += length
                // A later fragment's payload does not start with a header: stop at the protocol.
                if !firstFragment { break walk }
            default:
                break walk
            }
        }
        self.init(family: .ipv6, transport: next, source: source, destination: destination)
        if firstFragment { readTransport(bytes, at: offset) }
    }

    /// Fills in ports or ICMP type and code from the transport header at `offset`, as far as the
    /// bytes go.
    private mutating func readTransport(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        if IPProtocolNumber.hasPorts(transport) {
            guard offset + 4 <= bytes.count else { return }
            sourcePort = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            destinationPort = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
        } else if IPProtocolNumber.isICMP(transport) {
            guard offset + 2 <= bytes.count else { return }
            icmpType = bytes[offset]
            icmpCode = bytes[offset + 1]
        }
    }
}
