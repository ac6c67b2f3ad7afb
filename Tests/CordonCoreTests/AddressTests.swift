import CordonCore
import Testing

@Suite struct AddressTests {
    @Test func parsesAndPrintsBothFamilies() throws {
        let v4 = try #require(IPAddress("192.0.2.1"))
        #expect(v4.family == .ipv4)
        #expect(v4.low == 0xC000_0201)
        #expect(v4.description == "192.0.2.1")
        let v6 = try #require(IPAddress("2001:db8::1"))
        #expect(v6.family == .ipv6)
        #expect(v6.description == "2001:db8::1")
        #expect(IPAddress(bytes: v6.bytes) == v6)
        #expect(IPAddress(bytes: v4.bytes) == v4)
    }

    @Test(arguments: ["", "192.0.2", "192.0.2.256", "2001:db8:::1", "example.org", "192.0.2.1/24"])
    func rejectsMalformedAddresses(_ text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func masksToPrefix() throws {
        let v4 = try #require(IPAddress("203.0.113.77"))
        #expect(v4.masked(to: 24).description == "203.0.113.0")
        #expect(v4.masked(to: 16).description == "203.0.0.0")
        #expect(v4.masked(to: 0).description == "0.0.0.0")
        #expect(v4.masked(to: 32) == v4)
        let v6 = try #require(IPAddress("2001:db8:1234:5678:9abc::1"))
        #expect(v6.masked(to: 64).description == "2001:db8:1234:5678::")
        #expect(v6.masked(to: 48).description == "2001:db8:1234::")
        #expect(v6.masked(to: 72).description == "2001:db8:1234:5678:9a00::")
        #expect(v6.masked(to: 128) == v6)
    }

    @Test func prefixTextAndContainment() throws {
        let prefix = try #require(IPPrefix("198.51.100.0/24"))
        #expect(prefix.description == "198.51.100.0/24")
        #expect(prefix.contains(try #require(IPAddress("198.51.100.200"))))
        #expect(!prefix.contains(try #require(IPAddress("198.51.101.1"))))
        #expect(!prefix.contains(try #require(IPAddress("2001:db8::1"))))
        // Host bits are cleared, and a full-length prefix prints as a bare address.
        #expect(IPPrefix("198.51.100.9/24")?.description == "198.51.100.0/24")
        #expect(IPPrefix("198.51.100.9")?.description == "198.51.100.9")
        #expect(IPPrefix("198.51.100.9/33") == nil)
        #expect(IPPrefix("2001:db8::/129") == nil)
    }

    @Test func classifiesSpecialAddresses() throws {
        #expect(IPAddress("127.0.0.53")!.isLoopback)
        #expect(IPAddress("::1")!.isLoopback)
        #expect(IPAddress("::ffff:127.0.0.1")!.isLoopback)
        #expect(!IPAddress("192.0.2.1")!.isLoopback)
        #expect(IPAddress("224.0.0.251")!.isMulticast)
        #expect(IPAddress("ff02::1")!.isMulticast)
        #expect(IPAddress("255.255.255.255")!.isLimitedBroadcast)
        #expect(IPAddress("0.0.0.0")!.isUnspecified)
    }
}
