import CordonAgent
import CordonConntrack
import CordonCore
import Testing

/// The recorder's bookkeeping of conntrack ids: every connection counted exactly once, whatever
/// mix of events and dumps reports it.
@Suite struct RecorderTests {
    let host = IPAddress("192.0.2.10")!
    let peer = IPAddress("192.0.2.20")!

    func recorder() -> FlowRecorder {
        let recorder = FlowRecorder(aggregator: FlowAggregator())
        recorder.setLocalAddresses(LocalAddresses(unicast: [host]))
        return recorder
    }

    func entry(_ kind: ConntrackEntry.Kind, _ id: UInt32, port: UInt16 = 22) -> ConntrackEntry {
        ConntrackEntry(kind: kind, id: id, tuple: ConnectionTuple(transport: 6, source: peer, destination: host,
                                                                  sourcePort: 40_000, destinationPort: port))
    }

    func keys(_ ids: UInt32...) -> Set<UInt64> {
        Set(ids.map { entry(.existing, $0).tuple.connectionKey(id: $0) })
    }

    func connections(_ recorder: FlowRecorder, port: UInt16 = 22) -> UInt64 {
        recorder.takeChanges().upserts.first { $0.key.service == port }?.stats.connections ?? 0
    }

    @Test func eventAndStartupDumpOfTheSameConnectionCountOnce() {
        let r = recorder()
        r.handle(entry(.new, 1), at: 10)
        let generation = r.beginDump()
        r.applyDump([entry(.existing, 1), entry(.existing, 2)], generation: generation, at: 11, repair: false)
        #expect(connections(r) == 2)
        #expect(r.counters.recoveredConnections == 0)
    }

    @Test func destroyOfAnUnseenConnectionCountsIt() {
        let r = recorder()
        r.handle(entry(.destroy, 7), at: 10)
        r.handle(entry(.new, 8), at: 10)
        r.handle(entry(.destroy, 8), at: 11)
        #expect(connections(r) == 2)
    }

    @Test func resyncRecoversLostNewEventsAndForgetsLostDestroys() {
        let r = recorder()
        r.handle(entry(.new, 1), at: 10)
        r.handle(entry(.new, 2), at: 10)
        r.noteLostEvents()
        // Lost: NEW of 3 (still alive), DESTROY of 2.
        let generation = r.beginDump()
        r.applyDump([entry(.existing, 1), entry(.existing, 3)], generation: generation, at: 12, repair: true)
        #expect(connections(r) == 3)
        #expect(r.counters.recoveredConnections == 1)
        #expect(r.counters.lostEvents == 1)
        #expect(r.counters.resyncs == 1)
        #expect(Set(r.liveConnectionIDs()) == keys(1, 3))
        // Id 2 was forgotten, so if the kernel reuses it, the new connection counts.
        r.handle(entry(.new, 2), at: 13)
        #expect(connections(r) == 4)
    }

    @Test func connectionsDestroyedDuringADumpAreNotCountedAgain() {
        let r = recorder()
        r.handle(entry(.new, 5), at: 10)
        let generation = r.beginDump()
        r.handle(entry(.destroy, 5), at: 11)
        // The dump was read before the DESTROY and still lists 5.
        r.applyDump([entry(.existing, 5)], generation: generation, at: 11, repair: true)
        #expect(connections(r) == 1)
        #expect(r.liveConnectionIDs().isEmpty)
    }

    @Test func adoptedIdsFromThePreviousRunAreNotCountedAgain() {
        let r = recorder()
        r.adoptLiveConnections(Array(keys(1, 2, 9)))
        let generation = r.beginDump()
        r.applyDump([entry(.existing, 1), entry(.existing, 2), entry(.existing, 3)], generation: generation, at: 10, repair: false)
        #expect(connections(r) == 1)
        // 9 was not in the table any more: forgotten.
        #expect(Set(r.liveConnectionIDs()) == keys(1, 2, 3))
    }

    /// The kernel's ids are 32-bit hashes: two live connections can share one. Each still counts,
    /// through events and through a repairing dump alike.
    @Test func twoConnectionsSharingAnIdCountTwice() {
        let r = recorder()
        r.handle(entry(.new, 7, port: 22), at: 10)
        r.handle(entry(.new, 7, port: 443), at: 10)
        let opened = r.takeChanges().upserts
        #expect(opened.first { $0.key.service == 22 }?.stats.connections == 1)
        #expect(opened.first { $0.key.service == 443 }?.stats.connections == 1)
        let generation = r.beginDump()
        r.applyDump([entry(.existing, 7, port: 22), entry(.existing, 7, port: 443), entry(.existing, 7, port: 80)],
                    generation: generation, at: 11, repair: true)
        let repaired = r.takeChanges().upserts
        #expect(repaired.map(\.key.service) == [80])
        #expect(repaired.first?.stats.connections == 1)
        #expect(r.counters.recoveredConnections == 1)
        #expect(r.liveConnectionIDs().count == 3)
    }

    @Test func loopbackEventsAreIgnoredAndNotTracked() {
        let r = recorder()
        let lo = IPAddress("127.0.0.1")!
        r.handle(ConntrackEntry(kind: .new, id: 4, tuple: ConnectionTuple(transport: 6, source: lo, destination: lo, destinationPort: 22)),
                 at: 10)
        #expect(r.counters.ignoredEvents == 1)
        #expect(r.flowCount == 0)
        #expect(r.liveConnectionIDs().isEmpty)
    }
}
