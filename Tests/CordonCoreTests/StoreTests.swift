import CordonCore
import CordonStore
import Foundation
import Testing

@Suite struct StoreTests {
    func temporaryPath() -> String {
        NSTemporaryDirectory() + "cordon-store-test-\(UUID().uuidString).db"
    }

    func key(_ direction: Direction, _ transport: UInt8, _ remote: String, _ service: UInt16) -> FlowKey {
        FlowKey(direction: direction, transport: transport, local: IPAddress("192.0.2.10")!, remote: IPPrefix(remote)!, service: service)
    }

    @Test func flushesAreUpsertsAndSurviveReopening() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        var aggregator = FlowAggregator()
        aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 10)
        aggregator.record(key(.outbound, 17, "198.51.100.53", 53), at: 20)
        do {
            let store = try FlowStore(path: path)
            try store.write(aggregator.takeChanges())
            aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 30)
            let second = aggregator.takeChanges()
            try store.write(second)
            try store.write(second)  // a repeated flush changes nothing
        }
        let reader = try FlowStore(readingFrom: path)
        let all = try reader.loadAll()
        #expect(all.count == 2)
        let ssh = try #require(all.first { $0.key.service == 22 })
        #expect(ssh.stats == FlowStats(connections: 2, firstSeen: 10, lastSeen: 30))
    }

    @Test func filtersByDirectionProtocolPortAndTime() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        var aggregator = FlowAggregator()
        aggregator.record(key(.inbound, 6, "198.51.100.1", 22), at: 1_000)
        aggregator.record(key(.outbound, 6, "198.51.100.2", 22), at: 2_000)
        aggregator.record(key(.outbound, 17, "198.51.100.53", 53), at: 3_000)
        aggregator.record(key(.outbound, 1, "198.51.100.9", 8 << 8 | 22), at: 3_000)  // ICMP: service is not a port
        try store.write(aggregator.takeChanges())
        #expect(try store.flows(matching: FlowFilter(direction: .inbound)).count == 1)
        #expect(try store.flows(matching: FlowFilter(transport: 6)).count == 2)
        #expect(try store.flows(matching: FlowFilter(port: 22)).count == 2)
        #expect(try store.flows(matching: FlowFilter(port: 22 | 8 << 8)).isEmpty)
        #expect(try store.flows(matching: FlowFilter(seenSince: 2_500)).count == 2)
        #expect(try store.flows(matching: FlowFilter(direction: .outbound, transport: 6, port: 22)).count == 1)
    }

    @Test func rolledUpRowsAreReplacedNotDuplicated() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        var aggregator = FlowAggregator(remoteCap: 2)
        var state: UInt32 = 7
        for round in 0..<20 {
            for _ in 0..<50 {
                state = state &* 1_664_525 &+ 1_013_904_223
                aggregator.record(FlowKey(direction: .inbound, transport: 6, local: IPAddress("192.0.2.10")!,
                                          remote: IPPrefix(IPAddress(ipv4: state)), service: 22), at: Int64(round))
            }
            try store.write(aggregator.takeChanges())
        }
        let stored = try store.loadAll()
        #expect(stored.count == aggregator.count)
        #expect(stored.reduce(0) { $0 + $1.stats.connections } == 1_000)
    }

    @Test func readerRefusesAMissingDatabase() {
        #expect(throws: StoreError.self) { try FlowStore(readingFrom: "/nonexistent/cordon.db") }
    }

    @Test func persistsAgentState() throws {
        let path = temporaryPath()
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try FlowStore(path: path)
        #expect(try store.state("mode") == nil)
        try store.setState("mode", "discovery")
        try store.setState("mode", "discovery")
        #expect(try store.state("mode") == "discovery")
    }
}
