import CordonConntrack
import CordonCore
import Synchronization

/// Counters the agent reports in `cordon status`.
public struct RecorderCounters: Sendable, Codable, Equatable {
    /// Conntrack events and dump entries read.
    public var events: UInt64 = 0
    /// Times the kernel reported ENOBUFS: each means at least one event was lost.
    public var lostEvents: UInt64 = 0
    /// Table re-reads done to repair lost events.
    public var resyncs: UInt64 = 0
    /// Live connections found by a re-read that no event had reported.
    public var recoveredConnections: UInt64 = 0
    /// Events for traffic never subject to policy (loopback, host to itself).
    public var ignoredEvents: UInt64 = 0
    /// Packets enforcement refused, from the NFLOG group: dropped inbound, rejected outbound.
    public var rejectedInbound: UInt64 = 0
    public var rejectedOutbound: UInt64 = 0
    /// Times the kernel dropped log messages (ENOBUFS): red flows are then incomplete, though
    /// the table's own counters (`nft list table inet cordon`) still count every packet.
    public var lostLogMessages: UInt64 = 0
}

/// Turns conntrack entries into flow aggregates. Shared by the event thread, the re-sync thread
/// and the flusher, so its state lives behind one lock; each event holds it for a few hash lookups.
public final class FlowRecorder: Sendable {
    private struct State {
        var aggregator: FlowAggregator
        var local = LocalAddresses()
        /// Connections already counted and still alive (by `connectionKey(id:)`), with the re-sync
        /// generation they were seen in; a dump counts only connections missing here.
        var live = ConnectionIDTable()
        var generation: UInt32 = 1
        /// Ids destroyed while a dump is in flight: the dump may still list them.
        var destroyedDuringDump: Set<UInt64> = []
        var dumping = false
        var counters = RecorderCounters()
        /// Outbound flows to exact addresses with connections opened since the last flush, and
        /// when: the flush names them from the DNS answers that preceded them.
        var opened: [FlowKey: ClosedRange<Int64>] = [:]
    }

    /// Flows remembered between two flushes for naming; past it, a flood's new flows go unnamed.
    public static let openedLimit = 100_000

    private let state: Mutex<State>

    public init(aggregator: FlowAggregator) {
        state = Mutex(State(aggregator: aggregator))
    }

    public func setLocalAddresses(_ addresses: LocalAddresses) {
        state.withLock { $0.local = addresses }
    }

    public var localAddresses: LocalAddresses { state.withLock { $0.local } }

    /// Records a batch of events under one acquisition of the lock.
    public func handle(_ entries: [ConntrackEntry], at now: Int64) {
        state.withLock { s in
            for entry in entries { Self.handle(entry, in: &s, at: now) }
        }
    }

    public func handle(_ entry: ConntrackEntry, at now: Int64) {
        state.withLock { Self.handle(entry, in: &$0, at: now) }
    }

    private static func handle(_ entry: ConntrackEntry, in s: inout State, at now: Int64) {
        s.counters.events &+= 1
        switch entry.kind {
        case .new:
            guard let key = s.local.flowKey(for: entry.tuple) else {
                s.counters.ignoredEvents &+= 1
                return
            }
            if s.live.updateValue(s.generation, forKey: entry.tuple.connectionKey(id: entry.id)) == nil {
                s.aggregator.record(key, at: now)
                if key.direction == .outbound, key.remote.isSingleAddress {
                    if let times = s.opened[key] {
                        s.opened[key] = min(times.lowerBound, now)...max(times.upperBound, now)
                    } else if s.opened.count < Self.openedLimit {
                        s.opened[key] = now...now
                    }
                }
            }
        case .destroy:
            let connection = entry.tuple.connectionKey(id: entry.id)
            let counted = s.live.removeValue(forKey: connection) != nil
            if s.dumping { s.destroyedDuringDump.insert(connection) }
            guard let key = s.local.flowKey(for: entry.tuple) else {
                s.counters.ignoredEvents &+= 1
                return
            }
            // A connection whose NEW was lost is still a connection: count it on its way out.
            s.aggregator.record(key, connections: counted ? 0 : 1, packets: entry.packets, bytes: entry.bytes, at: now)
        case .existing:
            s.counters.ignoredEvents &+= 1
        }
    }

    /// Records a packet the enforcement table refused as a rejected flow. Each refused packet
    /// counts as one attempt: a refused connection never reaches conntrack's event stream, and
    /// the client's retransmissions are attempts too.
    public func recordRejected(_ header: PacketHeader, inbound: Bool, at now: Int64) {
        let service: UInt16
        if IPProtocolNumber.isICMP(header.transport) {
            service = UInt16(header.icmpType ?? 0) << 8 | UInt16(header.icmpCode ?? 0)
        } else {
            service = header.destinationPort ?? 0
        }
        let key = FlowKey(direction: inbound ? .inbound : .outbound, transport: header.transport,
                          local: inbound ? header.destination : header.source,
                          remote: IPPrefix(inbound ? header.source : header.destination), service: service, verdict: .rejected)
        state.withLock { s in
            if inbound { s.counters.rejectedInbound &+= 1 } else { s.counters.rejectedOutbound &+= 1 }
            s.aggregator.record(key, connections: 1, packets: 1, at: now)
        }
    }

    public func noteLostLogMessages() {
        state.withLock { $0.counters.lostLogMessages &+= 1 }
    }

    /// Marks the start of a table dump; returns the generation to pass to `applyDump`.
    public func beginDump() -> UInt32 {
        state.withLock { s in
            s.generation &+= 1
            s.dumping = true
            s.destroyedDuringDump.removeAll()
            return s.generation
        }
    }

    /// Counts the live connections of a dump that no event reported, and forgets ids that the
    /// dump proves are gone (their DESTROY was lost).
    /// - Parameter repair: false for the dump at start, whose finds are not "recovered" losses.
    public func applyDump(_ entries: [ConntrackEntry], generation: UInt32, at now: Int64, repair: Bool) {
        state.withLock { s in
            var present = Set<UInt64>(minimumCapacity: entries.count)
            for entry in entries {
                s.counters.events &+= 1
                let connection = entry.tuple.connectionKey(id: entry.id)
                present.insert(connection)
                guard !s.live.contains(connection), !s.destroyedDuringDump.contains(connection) else { continue }
                s.live.updateValue(generation, forKey: connection)
                guard let key = s.local.flowKey(for: entry.tuple) else {
                    s.counters.ignoredEvents &+= 1
                    continue
                }
                s.aggregator.record(key, packets: entry.packets, bytes: entry.bytes, at: now)
                if repair { s.counters.recoveredConnections &+= 1 }
            }
            s.live.filter { id, seen in seen >= generation || present.contains(id) }
            s.dumping = false
            s.destroyedDuringDump.removeAll()
            if repair { s.counters.resyncs &+= 1 }
        }
    }

    /// Keys of the live connections already counted, saved at a clean stop so that the next start's
    /// dump does not count them again.
    public func liveConnectionIDs() -> [UInt64] {
        state.withLock { $0.live.ids }
    }

    /// Takes over the keys a previous run saved. The first dump forgets those no longer alive.
    public func adoptLiveConnections(_ ids: [UInt64]) {
        state.withLock { s in
            for id in ids where !s.live.contains(id) { s.live.updateValue(0, forKey: id) }
        }
    }

    public func noteLostEvents() {
        state.withLock { $0.counters.lostEvents &+= 1 }
    }

    public var counters: RecorderCounters { state.withLock { $0.counters } }

    public var flowCount: Int { state.withLock { $0.aggregator.count } }

    public func takeChanges() -> FlowChanges { state.withLock { $0.aggregator.takeChanges() } }

    /// The outbound flows that opened connections since the last call, with the span of their
    /// opening times; forgets them.
    public func takeOpened() -> [FlowKey: ClosedRange<Int64>] {
        state.withLock { s in
            defer { s.opened.removeAll(keepingCapacity: true) }
            return s.opened
        }
    }

    public func restore(_ changes: FlowChanges) { state.withLock { $0.aggregator.restore(changes) } }
}
