import Foundation
import CordonCore
import Testing

@Suite struct FleetReviewTests {
    static let local = IPAddress("192.0.2.10")!
    static func record(_ direction: Direction, _ transport: UInt8, _ remote: String, _ port: UInt16, connections: UInt64 = 3,
                       last: Int64 = 1_800_000_000) -> FlowRecord {
        FlowRecord(key: FlowKey(direction: direction, transport: transport, local: local, remote: IPPrefix(IPAddress(remote)!), port: port),
                   stats: FlowStats(connections: connections, firstSeen: 1_799_000_000, lastSeen: last))
    }
    static let ssh = record(.inbound, IPProtocolNumber.tcp, "198.51.100.7", 22)
    static let dns = record(.outbound, IPProtocolNumber.udp, "192.0.2.53", 53)
    static let https = record(.outbound, IPProtocolNumber.tcp, "203.0.113.20", 443, connections: 40)
    static let old = record(.outbound, IPProtocolNumber.tcp, "203.0.113.99", 8080, last: 1_700_000_000)

    @Test("a record read back is the aggregate it was written from, ICMP and prefixes included")
    func aggregate() throws {
        let icmp = FlowKey(direction: .outbound, transport: IPProtocolNumber.icmp, local: Self.local, remote: IPPrefix(IPAddress("203.0.113.0")!, length: 24),
                           icmpType: 8, icmpCode: 0)
        let stats = FlowStats(connections: 2, packets: 9, bytes: 700, firstSeen: 1_799_000_000, lastSeen: 1_800_000_000)
        for key in [icmp, try #require(Self.ssh.aggregate?.key), try #require(Self.https.aggregate?.key)] {
            let back = try #require(FlowRecord(key: key, stats: stats).aggregate)
            #expect(back.key == key && back.stats == stats)
        }
    }

    @Test("what the ruleset rejects, most used first; flows older than the window do not count")
    func rejected() throws {
        let ruleset = try RulesetParser.parse("""
            networks:
              - name: ssh
                entries: [198.51.100.0/24]
                services: [tcp/22]
              - name: dns
                entries: [192.0.2.53]
                services: [udp/53]
            incoming:
              - from: ssh
            outgoing:
              - to: dns
            """, file: "t.yaml")
        let verdict = FleetReview.review(ruleset, flows: [Self.ssh, Self.dns, Self.https, Self.old], since: 1_750_000_000)
        #expect(verdict.flows == 3 && verdict.allowed == 2)
        #expect(verdict.rejected.map(\.remoteAddress) == ["203.0.113.20"])
        #expect(verdict.risks.isEmpty, "\(verdict.risks)")
        #expect(FleetReview.review(ruleset, flows: [Self.old], since: 0).rejected.count == 1, "inside a longer window it counts")
        // Only the busiest `shown` become records; the count is of them all.
        let all = FleetReview.review(ruleset, flows: [Self.ssh, Self.dns, Self.https, Self.old], since: 0)
        let first = FleetReview.review(ruleset, flows: [Self.ssh, Self.dns, Self.https, Self.old], since: 0, shown: 1)
        #expect(all.rejected.count == 2 && all.rejectedCount == 2)
        #expect(first.rejectedCount == 2 && first.rejected == Array(all.rejected.prefix(1)))
    }

    @Test("the host's management channel (the server among it) is always allowed, whatever the ruleset")
    func management() throws {
        let server = Self.record(.outbound, IPProtocolNumber.tcp, "192.0.2.1", 8443)
        let nothing = try RulesetParser.parse("networks:\n", file: "t.yaml")
        #expect(FleetReview.review(nothing, flows: [server], since: 0).rejected.count == 1)
        let channel = [ManagementChannel.WhitelistEntry(protocol: "tcp", address: "192.0.2.1", port: 8443)]
        let verdict = FleetReview.review(nothing, flows: [server, Self.https], since: 0, management: channel)
        #expect(verdict.rejected.map(\.remoteAddress) == ["203.0.113.20"], "only what the channel does not cover")
    }

    @Test("lockout risks from the record alone: SSH it was reached by, the resolver it used")
    func risks() throws {
        let nothing = try RulesetParser.parse("networks:\n", file: "t.yaml")
        let verdict = FleetReview.review(nothing, flows: [Self.ssh, Self.dns], since: 0)
        #expect(Set(verdict.risks.map(\.kind)) == [.ssh, .dns], "\(verdict.risks)")
        #expect(verdict.risks.first { $0.kind == .dns }?.message.contains("192.0.2.53") == true)
    }
}

/// A rollout's regression: what the host rejects now that its record shows it had before.
@Suite struct RegressionTests {
    static func flow(_ direction: Direction, remote: String, port: UInt16, verdict: FlowVerdict, first: String) -> FlowRecord {
        let local = direction == .inbound ? "\(port)" : "40000", peer = direction == .outbound ? "\(port)" : "50000"
        let json = """
            {"direction":"\(direction.rawValue)","protocol":"tcp","family":"ipv4","local_address":"192.0.2.10","local_port":\(local),
             "remote_address":"\(remote)","remote_port":\(peer),"icmp_type":null,"icmp_code":null,"connections":5,"packets":10,"bytes":100,
             "first_seen":"\(first)","last_seen":"\(first)","verdict":"\(verdict.rawValue)","remote_names":[]}
            """
        return try! JSONDecoder().decode(FlowRecord.self, from: Data(json.utf8))
    }

    @Test("a rejected flow to a peer and port the host reached before the rollout is a regression; a new one, or one first seen after, is not")
    func matches() {
        let record = [Self.flow(.outbound, remote: "198.51.100.7", port: 8080, verdict: .allowed, first: "2026-12-01T00:00:00Z"),
                      Self.flow(.inbound, remote: "203.0.113.9", port: 22, verdict: .allowed, first: "2026-12-01T00:00:00Z"),
                      Self.flow(.outbound, remote: "198.51.100.8", port: 443, verdict: .allowed, first: "2026-12-04T00:00:00Z")]
        let start = "2026-12-03T00:00:00Z"
        let again = Self.flow(.outbound, remote: "198.51.100.7", port: 8080, verdict: .rejected, first: "2026-12-03T01:00:00Z")
        #expect(Regression.earlier(again, in: record, before: start) == record[0])
        #expect(Regression.describe(again, earlier: record[0]).hasPrefix("rejected outbound tcp to 198.51.100.7:8080"))
        // Inbound: the host's own port names the service, whatever the peer's source port.
        #expect(Regression.earlier(Self.flow(.inbound, remote: "203.0.113.9", port: 22, verdict: .rejected, first: start), in: record, before: start) == record[1])
        #expect(Regression.earlier(Self.flow(.outbound, remote: "198.51.100.7", port: 9090, verdict: .rejected, first: start), in: record, before: start) == nil)
        #expect(Regression.earlier(Self.flow(.outbound, remote: "198.51.100.8", port: 443, verdict: .rejected, first: start), in: record, before: start) == nil,
                "first seen after the rollout began: not something the host had before")
        #expect(Regression.earlier(record[0], in: record, before: start) == nil, "an allowed flow is no regression")
    }
}
