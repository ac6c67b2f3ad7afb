/// Prefix lengths a group's rolled-up remotes move through as they keep arriving, finest first.
public enum RollUpLevels {
    public static func lengths(for family: AddressFamily) -> [Int] {
        family == .ipv4 ? [24, 16, 8, 0] : [64, 48, 32, 16, 0]
    }
}

/// What changed since the last flush: rows to write (absolute values) and rows to delete
/// (aggregates merged into a coarser prefix).
public struct FlowChanges: Sendable {
    public var upserts: [(key: FlowKey, stats: FlowStats)] = []
    public var removals: [FlowKey] = []
    public var isEmpty: Bool { upserts.isEmpty && removals.isEmpty }
    public init() {}
}

/// In-memory flow aggregates with a bound on their number.
///
/// Every (direction, protocol, port) group keeps up to `remoteCap` exact remote addresses. Past
/// that, new remotes are counted against their covering prefix (a /24 first); when the group also
/// holds `remoteCap` prefixes, all of them are merged one level coarser (/16, /8, /0). A group so
/// never holds more than about 2 × `remoteCap` aggregates, whatever a scan sends, and the first
/// remotes — usually the real clients — stay exact.
///
/// Holds the whole state (not just the last interval) so that the cap survives restarts and each
/// flush writes absolute values, which makes a repeated flush harmless.
public struct FlowAggregator: Sendable {
    public let remoteCap: Int
    private var entries: [FlowKey: Entry] = [:]
    private var groups: [FlowGroup: GroupState] = [:]
    /// Keys changed since the last flush, each once (the entry's flag says whether it is listed).
    private var dirty: [FlowKey] = []
    private var removed: Set<FlowKey> = []

    private struct Entry: Sendable {
        var stats: FlowStats
        var dirty: Bool
    }

    private struct GroupState {
        var exact = 0
        var prefixes = 0
        /// Index into `RollUpLevels.lengths` of the level new rolled-up remotes go to.
        var level = 0
    }

    public init(remoteCap: Int = 1024) {
        precondition(remoteCap > 0, "remote cap must be positive")
        self.remoteCap = remoteCap
    }

    public var count: Int { entries.count }

    /// Every aggregate (a copy: for tests, benchmarks and reports, not the event path).
    public var flows: [FlowKey: FlowStats] { entries.mapValues(\.stats) }

    public func stats(for key: FlowKey) -> FlowStats? { entries[key]?.stats }

    /// Restores an aggregate from the database without marking it for writing.
    public mutating func load(_ key: FlowKey, _ stats: FlowStats) {
        if entries.updateValue(Entry(stats: stats, dirty: false), forKey: key) != nil { return }
        var state = groups[key.group, default: GroupState()]
        if key.remote.isSingleAddress {
            state.exact += 1
        } else {
            state.prefixes += 1
            let lengths = RollUpLevels.lengths(for: key.family)
            let level = lengths.firstIndex { $0 <= Int(key.remote.length) } ?? lengths.count - 1
            state.level = max(state.level, level)
        }
        groups[key.group] = state
    }

    /// Counts connections (and, when the kernel accounts them, packets and bytes) for a key.
    /// `connections` is 0 for an event that only reports on a connection already counted.
    public mutating func record(_ key: FlowKey, connections: UInt64 = 1, packets: UInt64 = 0, bytes: UInt64 = 0,
                                at time: Int64) {
        let sample = FlowStats(connections: connections, packets: packets, bytes: bytes, firstSeen: time, lastSeen: time)
        if !merge(sample, into: key) { admit(key, sample) }
    }

    /// Hands out everything changed since the last call, and forgets it.
    public mutating func takeChanges() -> FlowChanges {
        var changes = FlowChanges()
        changes.upserts.reserveCapacity(dirty.count)
        for key in dirty {
            guard let index = entries.index(forKey: key) else { continue }
            entries.values[index].dirty = false
            changes.upserts.append((key, entries.values[index].stats))
        }
        changes.removals = Array(removed)
        dirty.removeAll(keepingCapacity: true)
        removed.removeAll()
        return changes
    }

    /// Puts changes back when writing them failed, so the next flush retries them.
    public mutating func restore(_ changes: FlowChanges) {
        for (key, _) in changes.upserts {
            guard let index = entries.index(forKey: key), !entries.values[index].dirty else { continue }
            entries.values[index].dirty = true
            dirty.append(key)
        }
        for key in changes.removals where entries[key] == nil { removed.insert(key) }
    }

    /// Folds a sample into an existing aggregate with one hash lookup; false if there is none.
    private mutating func merge(_ sample: FlowStats, into key: FlowKey) -> Bool {
        guard let index = entries.index(forKey: key) else { return false }
        entries.values[index].stats.merge(sample)
        if !entries.values[index].dirty {
            entries.values[index].dirty = true
            dirty.append(key)
        }
        return true
    }

    private mutating func insert(_ key: FlowKey, _ stats: FlowStats) {
        entries[key] = Entry(stats: stats, dirty: true)
        removed.remove(key)
        dirty.append(key)
    }

    private mutating func admit(_ key: FlowKey, _ sample: FlowStats) {
        let group = key.group
        var state = groups[group, default: GroupState()]
        defer { groups[group] = state }
        if key.remote.isSingleAddress && state.exact < remoteCap {
            state.exact += 1
            insert(key, sample)
            return
        }
        let lengths = RollUpLevels.lengths(for: key.family)
        while true {
            let rolled = key.rolledUp(to: min(lengths[state.level], Int(key.remote.length)))
            if merge(sample, into: rolled) { return }
            if state.prefixes < remoteCap || state.level == lengths.count - 1 {
                state.prefixes += 1
                insert(rolled, sample)
                return
            }
            state.level += 1
            state.prefixes = coarsen(group, to: lengths[state.level])
        }
    }

    /// Merges every rolled-up aggregate of a group into its prefix at `length`; returns how many
    /// rolled-up aggregates the group holds afterwards. Runs a few times per group at most.
    private mutating func coarsen(_ group: FlowGroup, to length: Int) -> Int {
        let finer = entries.filter { $0.key.group == group && !$0.key.remote.isSingleAddress && Int($0.key.remote.length) > length }
        for (key, entry) in finer {
            entries[key] = nil
            removed.insert(key)
            let coarse = key.rolledUp(to: length)
            if !merge(entry.stats, into: coarse) { insert(coarse, entry.stats) }
        }
        return entries.keys.reduce(0) { $0 + ($1.group == group && !$1.remote.isSingleAddress ? 1 : 0) }
    }
}
