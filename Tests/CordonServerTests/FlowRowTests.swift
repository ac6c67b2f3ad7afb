import CordonCore
@testable import CordonServer
import Testing

/// A stored flow row read back: the typed read (propose, review) must give what the record read
/// gives (a host's flows, regressions), or the fleet would be judged on other flows than the ones
/// its hosts show.
@Suite struct FlowRowTests {
    static func record(_ direction: Direction, _ proto: String, local: String, localPort: UInt16? = nil, remote: String, remotePort: UInt16? = nil,
                       icmp: (UInt8, UInt8)? = nil, verdict: FlowVerdict = .allowed, names: [String] = [], connections: UInt64 = 3) -> FlowRecord {
        FlowRecord(direction: direction, protocol: proto, family: local.contains(":") ? .ipv6 : .ipv4, localAddress: local, localPort: localPort,
                   remoteAddress: remote, remotePort: remotePort, icmpType: icmp?.0, icmpCode: icmp?.1, connections: connections, packets: 40,
                   bytes: 9_000, firstSeen: "2026-11-20T08:00:00Z", lastSeen: "2026-11-22T21:05:48Z", verdict: verdict, remoteNames: names)
    }

    /// A stored row's columns as PostgreSQL sends them (`FlowRow.columns`).
    struct Row {
        var key: String, first: String, last: String, connections: Int64, packets: Int64, bytes: Int64, names: String

        init(_ r: FlowRecord) {
            (key, first, last, names) = (FlowRow.key(r), r.firstSeen, r.lastSeen, FlowRow.names(r.remoteNames))
            (connections, packets, bytes) = (Int64(clamping: r.connections), Int64(clamping: r.packets), Int64(clamping: r.bytes))
        }

        init(key: String, first: String = "2026-11-20T08:00:00Z", last: String = "2026-11-22T21:05:48Z", connections: Int64 = 3, names: String = "") {
            (self.key, self.first, self.last, self.connections, packets, bytes, self.names) = (key, first, last, connections, 40, 9_000, names)
        }

        /// The line the record read gets for the same row (`FlowRow.line`): bigints as decimals.
        var line: String { [key, first, last, "\(connections)", "\(packets)", "\(bytes)", names].joined(separator: "|") }

        func read(_ reader: inout FlowRow.Reader) -> FleetFlow? {
            let (k, f, l, n) = (Array(key.utf8), Array(first.utf8), Array(last.utf8), Array(names.utf8))
            return k.withUnsafeBufferPointer { k in
                f.withUnsafeBufferPointer { f in
                    l.withUnsafeBufferPointer { l in
                        n.withUnsafeBufferPointer { n in
                            reader.flow(key: k, firstSeen: f, lastSeen: l, connections: connections, packets: packets, bytes: bytes, names: n)
                        }
                    }
                }
            }
        }

        var flow: FleetFlow? {
            var reader = FlowRow.Reader()
            return read(&reader)
        }
    }

    @Test(arguments: [
        record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.20", remotePort: 443, names: ["api.example.com", "cdn.example.com"]),
        record(.inbound, "tcp", local: "192.0.2.10", localPort: 22, remote: "198.51.100.7"),
        record(.outbound, "udp", local: "2001:db8::10", remote: "2001:db8:53::1", remotePort: 53),
        record(.outbound, "udp", local: "192.0.2.10", remote: "203.0.113.0/24", remotePort: 123),
        record(.outbound, "icmpv6", local: "2001:db8::10", remote: "2001:db8::/32", icmp: (128, 0)),
        record(.inbound, "icmp", local: "192.0.2.10", remote: "198.51.100.9", icmp: (8, 0), verdict: .rejected),
        record(.forward, "sctp", local: "192.0.2.30", remote: "203.0.113.40", remotePort: 3868),
        record(.outbound, "47", local: "192.0.2.10", remote: "203.0.113.41"),
        record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.42", remotePort: 443, connections: .max),
    ])
    func typedReadMatchesTheRecordRead(_ stored: FlowRecord) throws {
        let row = Row(stored)
        let record = try #require(FlowRow.record(row.line), "\(row.line)")
        let flow = try #require(row.flow, "\(row.line)")
        #expect(flow == FleetFlow(record), "\(row.line)")
        #expect(flow.names == stored.remoteNames)
        #expect(flow.stats.lastSeen == 1_795_381_548)
    }

    @Test(arguments: [
        Row(key: ""),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-"),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|"),
        Row(key: "sideways|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed"),
        Row(key: "outbound|tcpx|192.0.2.10|-|203.0.113.20|443|-|-|allowed"),
        Row(key: "outbound|tcp|192.0.2.010|-|203.0.113.20|443|-|-|allowed"),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20/33|443|-|-|allowed"),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|65536|-|-|allowed"),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|maybe"),
        Row(key: "outbound|tcp|192.0.2.10|x|203.0.113.20|443|-|-|allowed"),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed", connections: -1),
        Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed", first: "yesterday"),
    ])
    func aRowThatDoesNotReadIsNoFlow(_ row: Row) {
        #expect(row.flow == nil, "\(row.line)")
        #expect(Row(key: "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed").flow != nil)
    }

    /// One reader over a host's rows keeps the last local address: a row with another one must
    /// still read as its own.
    @Test func aReaderOverManyRowsReadsEachAsItsOwn() throws {
        let stored = [
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.20", remotePort: 443),
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.21", remotePort: 443),
            Self.record(.outbound, "tcp", local: "192.0.2.11", remote: "203.0.113.21", remotePort: 443),
            Self.record(.outbound, "udp", local: "2001:db8::10", remote: "2001:db8:53::1", remotePort: 53),
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.22", remotePort: 443),
        ]
        var reader = FlowRow.Reader()
        for record in stored {
            let row = Row(record)
            let flow = row.read(&reader)
            #expect(flow != nil && flow == row.flow, "\(row.line)")
            #expect(flow?.key.local == IPAddress(record.localAddress))
        }
    }
}
