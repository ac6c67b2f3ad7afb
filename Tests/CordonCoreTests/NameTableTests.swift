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
        #expect(table.names(for: a, at: 1006) == ["other.example.com", "api.snapcraft.io", "edge.cdn.example.net"],
                "newest answer first; in one answer the name asked for before its CNAME target")
        #expect(table.names(for: a, at: 1030) == ["api.snapcraft.io", "edge.cdn.example.net"], "other.example.com expired at 1015")
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

    @Test("changes hand out what to write and what the limits pushed out; a failed write is retried; a load writes nothing")
    func changes() {
        var table = NameTable(limits: .init(addressesPerName: 2, namesPerAddress: 8, names: 100))
        table.learn(address: a, names: ["www.shop.example", "shop.cdn.example"], ttl: 60, at: 10)
        var changes = table.takeChanges()
        #expect(Set(changes.upserts.map(\.binding.name)) == ["www.shop.example", "shop.cdn.example"])
        #expect(changes.upserts.first { $0.binding.name == "www.shop.example" }?.binding.queried == true)
        #expect(changes.upserts.first { $0.binding.name == "shop.cdn.example" }?.binding.queried == false, "a CNAME target was not asked for")
        #expect(table.takeChanges().isEmpty)
        table.learn(address: b, names: ["www.shop.example"], ttl: 60, at: 11)
        table.learn(address: IPAddress("192.0.2.7")!, names: ["www.shop.example"], ttl: 60, at: 12)
        changes = table.takeChanges()
        #expect(changes.removals == [.init(address: a, name: "www.shop.example")], "pushed out of the name's two addresses")
        table.restore(changes)
        #expect(table.takeChanges().removals == changes.removals, "a failed write hands the same out again")

        var restored = NameTable()
        for (address, binding) in table.all { restored.load(address: address, binding: binding) }
        #expect(restored.takeChanges().isEmpty)
        #expect(restored.bindings(for: a) == table.bindings(for: a))
        #expect(restored.names(for: b, at: 30) == ["www.shop.example"])
    }

    @Test("bindings over a span: valid at some moment of it; newest first, then asked-for names before CNAME targets")
    func span() {
        var table = NameTable()
        table.learn(address: a, names: ["www.shop.example", "shop.cdn.example"], ttl: 5, at: 100)
        #expect(table.bindings(for: a, from: 90, to: 99).isEmpty, "all before the answer")
        #expect(table.bindings(for: a, from: 106, to: 200).isEmpty, "all after it expired")
        #expect(table.bindings(for: a, from: 106, to: 200, grace: 1).map(\.name) == ["www.shop.example", "shop.cdn.example"])
        #expect(table.bindings(for: a, from: 90, to: 100).map(\.name) == ["www.shop.example", "shop.cdn.example"])
        table.learn(address: a, names: ["aaa.example"], ttl: 5, at: 101)
        #expect(table.bindings(for: a, from: 101, to: 101).map(\.name) == ["aaa.example", "www.shop.example", "shop.cdn.example"])
    }
}
