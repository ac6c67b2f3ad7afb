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

    /// The byte reader is the server's for stored rows; it must read exactly what `inet_pton`
    /// reads, leading zeros and stray bytes included, or a row would change meaning on the way.
    @Test(arguments: ["192.0.2.1", "0.0.0.0", "255.255.255.255", "10.0.0.255", "192.0.2.01", "192.0.2.256", "1.2.3", "1.2.3.4.5",
                      "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "01.2.3.4", "1.2.3.0004", "", "2001:db8::1", "::", "::ffff:192.0.2.1",
                      "2001:db8::1/64", "2001:DB8::A", "fe80::1%eth0", "2001:db8:::1", "1:2:3:4:5:6:7:8:9", "example.org",
                      "1234:5678:9abc:def0:1234:5678:255.255.255.255", "1234:5678:9abc:def0:1234:5678:255.255.255.255:1"])
    func readsBytesAsText(_ text: String) {
        let bytes = Array(text.utf8)
        #expect(bytes.withUnsafeBufferPointer { IPAddress(utf8: $0) } == IPAddress(text), "\(text)")
        #expect(bytes.withUnsafeBufferPointer { IPPrefix(utf8: $0) } == IPPrefix(text), "\(text)")
        for suffix in ["/0", "/24", "/32", "/33", "/128", "/024", "/", "/x"] {
            #expect((bytes + Array(suffix.utf8)).withUnsafeBufferPointer { IPPrefix(utf8: $0) } == IPPrefix(text + suffix), "\(text + suffix)")
        }
        // A NUL would end a C copy early: "::1\0junk" must not read as ::1.
        #expect((bytes + [0] + Array("junk".utf8)).withUnsafeBufferPointer { IPAddress(utf8: $0) } == nil)
    }

    @Test func readsStrictDecimalBytes() {
        func parse<T: FixedWidthInteger>(_ text: String, _: T.Type) -> T? { Array(text.utf8).withUnsafeBufferPointer { StrictDecimal.parse(utf8: $0, as: T.self) } }
        #expect(parse("0", UInt8.self) == 0 && parse("255", UInt8.self) == 255 && parse("256", UInt8.self) == nil)
        #expect(parse("18446744073709551615", UInt64.self) == .max && parse("18446744073709551616", UInt64.self) == nil)
        #expect(parse("", Int.self) == nil && parse("07", Int.self) == nil && parse("+7", Int.self) == nil && parse("-7", Int.self) == nil)
        for text in ["1", "65535", "65536", "0", "00", "12a"] {
            #expect(parse(text, UInt16.self) == StrictDecimal.parse(text, as: UInt16.self), "\(text)")
        }
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
