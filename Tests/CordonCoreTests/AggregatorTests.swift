import CordonCore
import Testing

@Suite struct AggregatorTests {
    let host = IPAddress("192.0.2.10")!

    func inbound(_ remote: String, port: UInt16 = 22) -> FlowKey {
        FlowKey(direction: .inbound, transport: IPProtocolNumber.tcp, local: host, remote: IPPrefix(IPAddress(remote)!), service: port)
    }

    @Test func countsConnectionsAndKeepsFirstAndLastSeen() {
        var aggregator = FlowAggregator()
        aggregator.record(inbound("198.51.100.1"), at: 100)
        aggregator.record(inbound("198.51.100.1"), at: 250)
        aggregator.record(inbound("198.51.100.1"), connections: 0, packets: 10, bytes: 900, at: 300)
        let stats = aggregator.flows[inbound("198.51.100.1")]
        #expect(stats == FlowStats(connections: 2, packets: 10, bytes: 900, firstSeen: 100, lastSeen: 300))
    }

    @Test func changesAreHandedOutOnceAndCanBeRestored() {
        var aggregator = FlowAggregator()
        aggregator.record(inbound("198.51.100.1"), at: 1)
        aggregator.record(inbound("198.51.100.2"), at: 1)
        aggregator.record(inbound("198.51.100.1"), at: 2)
        let first = aggregator.takeChanges()
        #expect(first.upserts.count == 2)
        #expect(aggregator.takeChanges().isEmpty)
        aggregator.restore(first)
        #expect(aggregator.takeChanges().upserts.count == 2)
    }

    @Test func remotesPastTheCapRollUpIntoPrefixes() {
        var aggregator = FlowAggregator(remoteCap: 4)
        for i in 1...4 { aggregator.record(inbound("198.51.100.\(i)"), at: 1) }
        aggregator.record(inbound("198.51.100.77"), at: 2)
        aggregator.record(inbound("198.51.100.78"), at: 3)
        aggregator.record(inbound("203.0.113.9"), at: 4)
        // The first four stay exact; later ones count against their /24.
        #expect(aggregator.flows[inbound("198.51.100.1")]?.connections == 1)
        let rolled = inbound("198.51.100.0").rolledUp(to: 24)
        #expect(aggregator.flows[rolled] == FlowStats(connections: 2, firstSeen: 2, lastSeen: 3))
        #expect(aggregator.flows[inbound("203.0.113.0").rolledUp(to: 24)]?.connections == 1)
        #expect(aggregator.count == 6)
        // A remote already held exactly keeps being counted exactly.
        aggregator.record(inbound("198.51.100.2"), at: 5)
        #expect(aggregator.flows[inbound("198.51.100.2")]?.connections == 2)
    }

    @Test func aScanStaysBoundedAndLosesNoConnection() {
        let cap = 16
        var aggregator = FlowAggregator(remoteCap: cap)
        var total: UInt64 = 0
        // 100,000 distinct remotes spread over the whole IPv4 space, all to one port.
        var state: UInt32 = 12_345
        for _ in 0..<100_000 {
            state = state &* 1_664_525 &+ 1_013_904_223
            let key = FlowKey(direction: .inbound, transport: 6, local: host, remote: IPPrefix(IPAddress(ipv4: state)), service: 22)
            aggregator.record(key, at: 1)
            total += 1
        }
        #expect(aggregator.count <= 2 * cap)
        #expect(aggregator.flows.values.reduce(0) { $0 + $1.connections } == total)
        // Coarsening deleted the finer prefixes it merged; the store is told to remove them.
        let changes = aggregator.takeChanges()
        #expect(!changes.removals.isEmpty)
        #expect(Set(changes.upserts.map(\.key)).isDisjoint(with: changes.removals))
        #expect(changes.upserts.count == aggregator.count)
    }

    @Test func capIsPerDirectionProtocolAndPort() {
        var aggregator = FlowAggregator(remoteCap: 2)
        for i in 1...3 {
            aggregator.record(inbound("198.51.100.\(i)", port: 22), at: 1)
            aggregator.record(inbound("198.51.100.\(i)", port: 443), at: 1)
        }
        // Each port keeps its own two exact remotes plus one rolled-up /24.
        #expect(aggregator.count == 6)
        #expect(aggregator.flows[inbound("198.51.100.3", port: 443)] == nil)
        #expect(aggregator.flows[inbound("198.51.100.0", port: 443).rolledUp(to: 24)]?.connections == 1)
    }

    @Test func loadedStateKeepsTheCapAcrossRestarts() {
        var before = FlowAggregator(remoteCap: 2)
        for i in 1...5 { before.record(inbound("198.51.100.\(i)"), at: 1) }
        var after = FlowAggregator(remoteCap: 2)
        for (key, stats) in before.flows { after.load(key, stats) }
        #expect(after.takeChanges().isEmpty)
        after.record(inbound("198.51.100.200"), at: 2)
        #expect(after.count == before.count)
        #expect(after.flows[inbound("198.51.100.0").rolledUp(to: 24)]?.connections == 4)
    }

    @Test func ipv6RollsUpToSlash64First() {
        var aggregator = FlowAggregator(remoteCap: 1)
        let host6 = IPAddress("2001:db8::10")!
        func key(_ remote: String) -> FlowKey {
            FlowKey(direction: .outbound, transport: 6, local: host6, remote: IPPrefix(IPAddress(remote)!), service: 443)
        }
        aggregator.record(key("2001:db8:1::1"), at: 1)
        aggregator.record(key("2001:db8:1::2"), at: 1)
        #expect(aggregator.flows.keys.contains { $0.remote.description == "2001:db8:1::/64" })
    }
}

@Suite struct ConnectionIDTableTests {
    /// Random inserts and removals checked against Swift's Dictionary, across growth.
    @Test func behavesLikeADictionary() {
        var table = ConnectionIDTable(capacity: 4)
        var reference: [UInt64: UInt32] = [:]
        var state: UInt64 = 42
        for step in 0..<200_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1
            // A small id space makes removals hit and probe runs collide.
            let id = (state >> 40) % 5_000
            if state >> 63 == 0 {
                #expect(table.updateValue(UInt32(step), forKey: id) == reference.updateValue(UInt32(step), forKey: id))
            } else {
                #expect(table.removeValue(forKey: id) == reference.removeValue(forKey: id))
            }
        }
        #expect(table.count == reference.count)
        for (id, generation) in reference { #expect(table[id] == generation) }
        #expect(Set(table.ids) == Set(reference.keys))
        table.filter { id, _ in id % 2 == 0 }
        #expect(Set(table.ids) == Set(reference.keys.filter { $0 % 2 == 0 }))
        #expect(table[0] == reference[0])
    }
}
