import CordonCore
import Testing

@Suite struct NameTableTests {
    let a = IPAddress("192.0.2.5")!, b = IPAddress("192.0.2.6")!

    @Test("an address carries the names it answered while they are valid, newest first; first and last seen are kept")
    func validity() {
        var table = NameTable()
        table.learn(address: a, names: ["api.snapcraft.io", "edge.cdn.example.net"], ttl: 60, at: 1000)
        table.learn(address: a, names: ["other.example.com"], ttl: 10, at: 1005)
        #expect(table.names(for: a, at: 999).isEmpty, "nothing before the answer")
        #expect(table.names(for: a, at: 1006) == ["other.example.com", "edge.cdn.example.net", "api.snapcraft.io"])
        #expect(table.names(for: a, at: 1030) == ["edge.cdn.example.net", "api.snapcraft.io"], "other.example.com expired at 1015")
        #expect(table.names(for: a, at: 1030, grace: 20).count == 3)
        table.learn(address: a, names: ["api.snapcraft.io"], ttl: 60, at: 1100)
        let binding = table.bindings(for: a).first { $0.name == "api.snapcraft.io" }
        #expect(binding?.firstSeen == 1000 && binding?.lastSeen == 1100 && binding?.expires == 1160)
        #expect(table.names(for: a, at: 1120) == ["api.snapcraft.io"])
        #expect(table.addresses(for: "api.snapcraft.io") == [a])
        #expect(table.names(for: b, at: 1006).isEmpty)
    }

    @Test("one name answered with ever new addresses keeps the newest, up to its limit, and counts the rest")
    func addressesPerName() {
        var table = NameTable(limits: .init(addressesPerName: 3, namesPerAddress: 8, names: 100))
        for n in 1...10 { table.learn(address: IPAddress("198.51.100.\(n)")!, names: ["rotating.example.com"], ttl: 300, at: Int64(n)) }
        #expect(table.addresses(for: "rotating.example.com").map(\.description) == ["198.51.100.8", "198.51.100.9", "198.51.100.10"])
        #expect(table.evictions.addressesPerName == 7)
        #expect(table.names(for: IPAddress("198.51.100.1")!, at: 5).isEmpty, "an evicted address no longer carries the name")
        #expect(table.addressCount == 3)
    }

    @Test("names per address are bounded, the least recently answered go")
    func namesPerAddress() {
        var table = NameTable(limits: .init(addressesPerName: 10, namesPerAddress: 2, names: 100))
        table.learn(address: a, names: ["one.example.com"], ttl: 300, at: 1)
        table.learn(address: a, names: ["two.example.com"], ttl: 300, at: 2)
        table.learn(address: a, names: ["three.example.com"], ttl: 300, at: 3)
        #expect(Set(table.names(for: a, at: 4)) == ["two.example.com", "three.example.com"])
        #expect(table.addresses(for: "one.example.com").isEmpty && table.evictions.namesPerAddress == 1)
    }

    @Test("a flood of unique names stays within the total, evicting the oldest, and says how many")
    func flood() {
        var table = NameTable(limits: .init(addressesPerName: 10, namesPerAddress: 4, names: 1000))
        for n in 0..<20_000 {
            let address = IPAddress(ipv4: 0xC633_6400 | UInt32(n % 256))   // 198.51.100.0/24
            table.learn(address: address, names: ["n\(n).flood.example"], ttl: 60, at: Int64(n))
        }
        #expect(table.nameCount <= 1000)
        #expect(table.evictions.names + table.evictions.namesPerAddress + table.nameCount == 20_000)
        #expect(!table.addresses(for: "n19999.flood.example").isEmpty, "the newest name is kept")
        #expect(table.addresses(for: "n0.flood.example").isEmpty)
    }
}
