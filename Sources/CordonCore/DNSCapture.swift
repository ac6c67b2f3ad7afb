/// Turns the packets a resolver sent to this host (as an NFLOG group or a queue hands them over,
/// whole) into the DNS messages they carry: a UDP datagram is one message; a TCP stream is cut
/// into its length-prefixed messages, reassembled in order.
///
/// The packets come from the network, so this is bounded in every direction: streams tracked
/// (oldest dropped), bytes buffered per stream (one message of at most 64 KiB and its prefix),
/// and a stream with a gap (a log message the kernel dropped, a segment out of order) is given
/// up rather than guessed at, and counted. The kernel reassembles IP fragments before the
/// hooks Cordon's rules sit on, so a fragment here is ignored.
public struct DNSStreams: Sendable {
    public struct Counters: Sendable, Equatable, Codable {
        /// DNS messages handed out (UDP datagrams and complete TCP messages).
        public var messages: UInt64 = 0
        /// TCP streams given up at a gap, or pushed out by newer ones.
        public var abandonedStreams: UInt64 = 0
        /// Packets that were not IP/UDP/TCP from port 53 as far as the copy went.
        public var unreadable: UInt64 = 0
        public init() {}
    }

    /// The two ends of one TCP connection to a resolver.
    struct StreamKey: Hashable, Sendable {
        var resolver: IPAddress
        var resolverPort: UInt16
        var local: IPAddress
        var localPort: UInt16
    }

    struct Stream: Sendable {
        /// The sequence number of the next byte expected.
        var next: UInt32
        var buffer: [UInt8] = []
        var lastActive: Int64
    }

    public let streamLimit: Int
    public private(set) var counters = Counters()
    private var streams: [StreamKey: Stream] = [:]

    public init(streamLimit: Int = 256) {
        precondition(streamLimit > 0)
        self.streamLimit = streamLimit
    }

    public var streamCount: Int { streams.count }

    /// The DNS messages completed by one packet (none, one, or for TCP possibly several), with
    /// the resolver that sent them.
    public mutating func feed(_ packet: [UInt8], at now: Int64) -> (resolver: IPAddress?, messages: [[UInt8]]) {
        guard let segment = Segment(packet) else {
            counters.unreadable += 1
            return (nil, [])
        }
        switch segment.transport {
        case IPProtocolNumber.udp:
            guard !segment.payload.isEmpty else { return (segment.source, []) }
            counters.messages += 1
            return (segment.source, [Array(segment.payload)])
        case IPProtocolNumber.tcp:
            return (segment.source, stream(segment, at: now))
        default:
            counters.unreadable += 1
            return (segment.source, [])
        }
    }

    private mutating func stream(_ segment: Segment, at now: Int64) -> [[UInt8]] {
        let key = StreamKey(resolver: segment.source, resolverPort: segment.sourcePort,
                            local: segment.destination, localPort: segment.destinationPort)
        if segment.reset {
            streams[key] = nil
            return []
        }
        if segment.synchronize {
            // The resolver's SYN-ACK: the stream's first byte follows its sequence number.
            admit(key, Stream(next: segment.sequence &+ 1, lastActive: now))
            return []
        }
        guard var stream = streams[key] else {
            // Joined mid-stream (the agent started during a lookup): message boundaries unknown.
            return []
        }
        defer { if segment.finish { streams[key] = nil } }
        var payload = segment.payload[...]
        // A retransmission repeats bytes already taken: skip them. Sequence numbers wrap, so the
        // distance is taken modulo 2^32 and read as signed.
        let offset = Int32(bitPattern: stream.next &- segment.sequence)
        if offset > 0 {
            guard Int(offset) < payload.count else { return [] }
            payload = payload.dropFirst(Int(offset))
        } else if offset < 0 {
            streams[key] = nil
            counters.abandonedStreams += 1
            return []
        }
        stream.buffer += payload
        stream.next = stream.next &+ UInt32(payload.count)
        stream.lastActive = now
        var messages: [[UInt8]] = []
        while stream.buffer.count >= 2 {
            let length = Int(stream.buffer[0]) << 8 | Int(stream.buffer[1])
            guard stream.buffer.count >= 2 + length else { break }
            if length > 0 { messages.append(Array(stream.buffer[2..<(2 + length)])) }
            stream.buffer.removeFirst(2 + length)
        }
        counters.messages += UInt64(messages.count)
        streams[key] = stream
        return messages
    }

    /// Keeps at most `streamLimit` streams: the least recently active goes first.
    private mutating func admit(_ key: StreamKey, _ stream: Stream) {
        if streams[key] == nil, streams.count >= streamLimit,
           let oldest = streams.min(by: { $0.value.lastActive < $1.value.lastActive })?.key {
            streams[oldest] = nil
            counters.abandonedStreams += 1
        }
        streams[key] = stream
    }

    /// Forgets streams idle for `seconds` (a resolver that never closed): bounded memory over time.
    public mutating func expire(idleFor seconds: Int64, at now: Int64) {
        let before = streams.count
        streams = streams.filter { now - $0.value.lastActive < seconds }
        counters.abandonedStreams += UInt64(before - streams.count)
    }

    /// The transport fields and payload of one IPv4 or IPv6 packet, first fragment only.
    struct Segment {
        var transport: UInt8
        var source: IPAddress
        var destination: IPAddress
        var sourcePort: UInt16
        var destinationPort: UInt16
        var sequence: UInt32 = 0
        var synchronize = false, finish = false, reset = false
        var payload: ArraySlice<UInt8>

        init?(_ bytes: [UInt8]) {
            guard let first = bytes.first else { return nil }
            var offset: Int
            var end = bytes.count
            var transport: UInt8
            let source: IPAddress, destination: IPAddress
            switch first >> 4 {
            case 4:
                guard bytes.count >= 20 else { return nil }
                offset = Int(first & 0x0F) * 4
                let total = Int(bytes[2]) << 8 | Int(bytes[3])
                // More fragments, or an offset: not a whole datagram.
                guard offset >= 20, (UInt16(bytes[6]) << 8 | UInt16(bytes[7])) & 0x3FFF == 0,
                      let s = IPAddress(bytes: bytes[12..<16]), let d = IPAddress(bytes: bytes[16..<20]) else { return nil }
                if total >= offset && total < end { end = total }
                transport = bytes[9]
                source = s
                destination = d
            case 6:
                guard bytes.count >= 40, let s = IPAddress(bytes: bytes[8..<24]), let d = IPAddress(bytes: bytes[24..<40]) else { return nil }
                let payloadLength = Int(bytes[4]) << 8 | Int(bytes[5])
                if payloadLength > 0 && 40 + payloadLength < end { end = 40 + payloadLength }
                transport = bytes[6]
                offset = 40
                var walked = 0
                // Hop-by-hop, routing, destination options; a fragment header means not whole.
                while [0, 43, 60].contains(transport) {
                    guard walked < PacketHeader.extensionHeaderLimit, offset + 2 <= end else { return nil }
                    walked += 1
                    transport = bytes[offset]
                    offset += (Int(bytes[offset + 1]) + 1) * 8
                }
                source = s
                destination = d
            default:
                return nil
            }
            guard offset + 4 <= end else { return nil }
            self.transport = transport
            self.source = source
            self.destination = destination
            sourcePort = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            destinationPort = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
            switch transport {
            case IPProtocolNumber.udp:
                guard offset + 8 <= end else { return nil }
                payload = bytes[(offset + 8)..<end]
            case IPProtocolNumber.tcp:
                guard offset + 20 <= end else { return nil }
                let headerLength = Int(bytes[offset + 12] >> 4) * 4
                guard headerLength >= 20, offset + headerLength <= end else { return nil }
                sequence = UInt32(bytes[offset + 4]) << 24 | UInt32(bytes[offset + 5]) << 16 | UInt32(bytes[offset + 6]) << 8 | UInt32(bytes[offset + 7])
                let flags = bytes[offset + 13]
                finish = flags & 0x01 != 0
                synchronize = flags & 0x02 != 0
                reset = flags & 0x04 != 0
                payload = bytes[(offset + headerLength)..<end]
            default:
                return nil
            }
        }
    }
}
