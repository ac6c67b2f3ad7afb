import CordonCore
import Foundation
import Testing

@Suite struct TextTests {
    @Test func formatsRFC3339InUTC() {
        #expect(TimeText.rfc3339(0) == "1970-01-01T00:00:00Z")
        #expect(TimeText.rfc3339(1795381548) == "2026-11-22T21:05:48Z")
        // Read back by arithmetic, as Foundation reads it, across leap days and centuries.
        for seconds: Int64 in [0, 951_782_400, 1_709_164_800, 1_795_381_548, 4_107_542_399, -86_400] {
            let text = TimeText.rfc3339(seconds)
            #expect(TimeText.unix(text) == seconds, "\(text)")
            #expect(TimeText.unix(text) == (try? Date(text, strategy: .iso8601)).map { Int64($0.timeIntervalSince1970) }, "\(text)")
        }
        // Other forms go to Foundation; what is not a time is nil.
        #expect(TimeText.unix("2026-11-22T22:05:48+01:00") == 1_795_381_548)
        #expect(TimeText.unix("2026-13-22T21:05:48Z") == nil && TimeText.unix("yesterday") == nil && TimeText.unix("2026-11-22T21:05:4xZ") == nil)
        // From a stored row's bytes, the same.
        for text in ["2026-11-22T21:05:48Z", "2026-11-22T22:05:48+01:00", "2026-13-22T21:05:48Z", "yesterday", ""] {
            #expect(Array(text.utf8).withUnsafeBufferPointer { TimeText.unix(utf8: $0) } == TimeText.unix(text), "\(text)")
        }
    }

    @Test(arguments: [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("1w", 604_800), ("0s", 0)] as [(String, Int64)])
    func parsesDurations(_ text: String, _ seconds: Int64) {
        #expect(TimeText.duration(text) == seconds)
    }

    @Test(arguments: ["", "h", "2", "2x", "-1h", "1.5h", "99999999999999999999d"])
    func rejectsBadDurations(_ text: String) {
        #expect(TimeText.duration(text) == nil)
    }

    @Test func protocolNamesRoundTrip() {
        for name in ["tcp", "udp", "icmp", "icmpv6"] {
            #expect(IPProtocolNumber.parse(name).map(IPProtocolNumber.name) == name)
        }
        #expect(IPProtocolNumber.parse("47") == 47)
        #expect(IPProtocolNumber.name(47) == "47")
        #expect(IPProtocolNumber.parse("TCP") == 6)
        #expect(IPProtocolNumber.parse("tcpp") == nil)
        #expect(IPProtocolNumber.parse("256") == nil)
    }

    @Test func flowJSONHasEveryContractFieldWithNulls() throws {
        let key = FlowKey(direction: .outbound, transport: 17, local: IPAddress("192.0.2.10")!,
                          remote: IPPrefix(IPAddress("198.51.100.53")!), service: 53)
        let record = FlowRecord(key: key, stats: FlowStats(connections: 3, firstSeen: 0, lastSeen: 60))
        let object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as! [String: Any]
        let fields = ["direction", "protocol", "family", "local_address", "local_port", "remote_address", "remote_port",
                      "icmp_type", "icmp_code", "connections", "first_seen", "last_seen"]
        for field in fields { #expect(object.keys.contains(field), "missing \(field)") }
        #expect(object["local_port"] is NSNull)
        #expect(object["icmp_type"] is NSNull)
        #expect(object["remote_port"] as? Int == 53)
        #expect(object["protocol"] as? String == "udp")
        #expect(object["family"] as? String == "ipv4")
        #expect(object["last_seen"] as? String == "1970-01-01T00:01:00Z")
    }

    @Test func discoveryTableRendersAsNftSyntax() {
        let text = CordonTables.discovery().nftText
        #expect(text.hasPrefix("table inet cordon {"))
        #expect(text.contains("type filter hook input priority 0; policy accept;"))
        #expect(text.contains("ct state established,related accept"))
        #expect(!text.contains("drop"))
    }
}

@Suite struct ContentDigestTests {
    /// FIPS 180-4 examples and the empty string.
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func matchesKnownDigests(_ text: String, _ digest: String) {
        #expect(ContentDigest.hex(text) == digest)
    }

    @Test func millionAs() {
        #expect(ContentDigest.hex(String(repeating: "a", count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

@Suite struct JSONTextTests {
    /// The hand-written JSON of a flow says exactly what the Codable encoding says.
    @Test(arguments: [
        FlowKey(direction: .inbound, transport: 6, local: IPAddress("192.0.2.10")!, remote: IPPrefix("198.51.100.0/24")!, service: 22),
        FlowKey(direction: .outbound, transport: 58, local: IPAddress("2001:db8::10")!, remote: IPPrefix("2001:db8::1")!, service: 128 << 8),
        FlowKey(direction: .forward, transport: 47, local: IPAddress("192.0.2.1")!, remote: IPPrefix("203.0.113.7")!, service: 0),
    ])
    func flowJSONMatchesTheEncoder(_ key: FlowKey) throws {
        let record = FlowRecord(key: key, stats: FlowStats(connections: 5, packets: 7, bytes: 900, firstSeen: 10, lastSeen: 20))
        let fast = try JSONSerialization.jsonObject(with: Data(record.json(extra: [("rule", "\"incoming:ssh\"")]).utf8)) as! NSDictionary
        var encoded = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as! [String: Any]
        encoded["rule"] = "incoming:ssh"
        #expect(fast == encoded as NSDictionary)
    }

    @Test func escapesStrings() {
        #expect(JSONText.quoted("a\"b\\c\nd\u{1}é") == "\"a\\\"b\\\\c\\nd\\u0001é\"")
    }
}
