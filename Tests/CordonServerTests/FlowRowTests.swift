import CordonCore
@testable import CordonServer
import Testing

/// A stored flow row read back: the typed read from bytes (propose, review) must give what the
/// record read gives (a host's flows, regressions), or the fleet would be judged on other flows
/// than the ones its hosts show.
@Suite struct FlowRowTests {
    static func record(_ direction: Direction, _ proto: String, local: String, localPort: UInt16? = nil, remote: String, remotePort: UInt16? = nil,
                       icmp: (UInt8, UInt8)? = nil, verdict: FlowVerdict = .allowed, names: [String] = [], connections: UInt64 = 3) -> FlowRecord {
        FlowRecord(direction: direction, protocol: proto, family: local.contains(":") ? .ipv6 : .ipv4, localAddress: local, localPort: localPort,
                   remoteAddress: remote, remotePort: remotePort, icmpType: icmp?.0, icmpCode: icmp?.1, connections: connections, packets: 40,
                   bytes: 9_000, firstSeen: "2026-11-20T08:00:00Z", lastSeen: "2026-11-22T21:05:48Z", verdict: verdict, remoteNames: names)
    }

    /// The line PostgreSQL builds from a stored row (`FlowRow.line`): bigints print as decimals.
    static func line(_ r: FlowRecord) -> String {
        [FlowRow.key(r), r.firstSeen, r.lastSeen, "\(Int64(clamping: r.connections))", "\(Int64(clamping: r.packets))",
         "\(Int64(clamping: r.bytes))", FlowRow.names(r.remoteNames)].joined(separator: "|")
    }

    static func flow(_ line: String) -> FleetFlow? { Array(line.utf8).withUnsafeBufferPointer { FlowRow.flow(utf8: $0) } }

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
        let line = Self.line(stored)
        let record = try #require(FlowRow.record(line), "\(line)")
        let flow = try #require(Self.flow(line), "\(line)")
        #expect(flow == FleetFlow(record), "\(line)")
        #expect(flow.names == stored.remoteNames)
        #expect(flow.stats.lastSeen == 1_795_381_548)
    }

    @Test(arguments: [
        "", "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000",
        "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000||",
        "sideways|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcpx|192.0.2.10|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.010|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.10|-|203.0.113.20/33|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.10|-|203.0.113.20|65536|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|-1|40|9000|",
        "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|maybe|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.10|-|203.0.113.20|443|-|-|allowed|yesterday|2026-11-22T21:05:48Z|3|40|9000|",
        "outbound|tcp|192.0.2.10|x|203.0.113.20|443|-|-|allowed|2026-11-20T08:00:00Z|2026-11-22T21:05:48Z|3|40|9000|",
    ])
    func aLineThatDoesNotReadIsNoFlow(_ line: String) {
        #expect(Self.flow(line) == nil, "\(line)")
    }
}

extension FlowRowTests {
    /// One reader over a host's lines keeps the last local address: a line with another one must
    /// still read as its own.
    @Test func aReaderOverManyLinesReadsEachAsItsOwn() throws {
        let stored = [
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.20", remotePort: 443),
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.21", remotePort: 443),
            Self.record(.outbound, "tcp", local: "192.0.2.11", remote: "203.0.113.21", remotePort: 443),
            Self.record(.outbound, "udp", local: "2001:db8::10", remote: "2001:db8:53::1", remotePort: 53),
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.22", remotePort: 443),
        ]
        var reader = FlowRow.Reader()
        for record in stored {
            let line = Self.line(record)
            let flow = Array(line.utf8).withUnsafeBufferPointer { reader.flow(utf8: $0) }
            #expect(flow == Self.flow(line), "\(line)")
            #expect(flow?.key.local == IPAddress(record.localAddress))
        }
    }
}

extension FlowRowTests {
    /// A host's rows arrive as one text, a line each: every line that reads is a flow, in order,
    /// and one that does not is left out without taking its neighbours with it.
    @Test func aHostsLinesJoinedReadAsTheirFlows() {
        let stored = [
            Self.record(.outbound, "tcp", local: "192.0.2.10", remote: "203.0.113.20", remotePort: 443, names: ["api.example.com"]),
            Self.record(.inbound, "tcp", local: "192.0.2.10", localPort: 22, remote: "198.51.100.7"),
            Self.record(.outbound, "udp", local: "2001:db8::10", remote: "2001:db8:53::1", remotePort: 53),
        ]
        let lines = stored.map(Self.line)
        let joined = [lines[0], "outbound|tcp|not-an-address", lines[1], lines[2]].joined(separator: "\n")
        let flows = Array(joined.utf8).withUnsafeBufferPointer { FlowRow.flows(utf8: $0) }
        #expect(flows == stored.compactMap(FleetFlow.init))
        #expect(Array("".utf8).withUnsafeBufferPointer { FlowRow.flows(utf8: $0) }.isEmpty)
    }
}
