/// Conntrack ids of live connections already counted, each with the re-sync generation it was
/// seen in.
///
/// Every event inserts or removes one id, and the table holds as many ids as the kernel holds
/// connections (hundreds of thousands on a busy host), so this is an open-addressing table with
/// linear probing and backward-shift deletion over two flat arrays: one multiply to hash, no
/// tombstones, no per-entry allocation. Swift's Dictionary spent more time hashing than the rest
/// of the event path together.
public struct ConnectionIDTable: Sendable {
    private var keys: [UInt32]
    private var values: [UInt32]
    private var used: [Bool]
    private var mask: Int
    public private(set) var count = 0

    public init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt32](repeating: 0, count: size)
        values = [UInt32](repeating: 0, count: size)
        used = [Bool](repeating: false, count: size)
        mask = size - 1
    }

    @inline(__always)
    private func home(_ id: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(id) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    private func slot(of id: UInt32) -> Int? {
        var index = home(id)
        while used[index] {
            if keys[index] == id { return index }
            index = (index + 1) & mask
        }
        return nil
    }

    public subscript(id: UInt32) -> UInt32? {
        slot(of: id).map { values[$0] }
    }

    public func contains(_ id: UInt32) -> Bool { slot(of: id) != nil }

    /// Inserts or replaces; returns the previous generation, if any.
    @discardableResult
    public mutating func updateValue(_ generation: UInt32, forKey id: UInt32) -> UInt32? {
        if (count + 1) * 2 > keys.count { grow() }
        var index = home(id)
        while used[index] {
            if keys[index] == id {
                let old = values[index]
                values[index] = generation
                return old
            }
            index = (index + 1) & mask
        }
        used[index] = true
        keys[index] = id
        values[index] = generation
        count += 1
        return nil
    }

    /// Removes an id; returns its generation, if it was there.
    @discardableResult
    public mutating func removeValue(forKey id: UInt32) -> UInt32? {
        guard var hole = slot(of: id) else { return nil }
        let old = values[hole]
        used[hole] = false
        count -= 1
        // Backward shift: pull later members of the probe run into the hole so lookups that
        // stop at the first empty slot still find them.
        var index = (hole + 1) & mask
        while used[index] {
            let wanted = home(keys[index])
            let distanceToHole = (hole - wanted) & mask
            let distanceToIndex = (index - wanted) & mask
            if distanceToHole < distanceToIndex {
                keys[hole] = keys[index]
                values[hole] = values[index]
                used[hole] = true
                used[index] = false
                hole = index
            }
            index = (index + 1) & mask
        }
        return old
    }

    /// Keeps only the entries for which `keep` is true.
    public mutating func filter(_ keep: (UInt32, UInt32) -> Bool) {
        var kept = ConnectionIDTable(capacity: count)
        for index in 0..<keys.count where used[index] && keep(keys[index], values[index]) {
            kept.updateValue(values[index], forKey: keys[index])
        }
        self = kept
    }

    public var ids: [UInt32] { (0..<keys.count).filter { used[$0] }.map { keys[$0] } }

    private mutating func grow() {
        let old = (keys, values, used)
        self = ConnectionIDTable(capacity: keys.count)
        for index in 0..<old.0.count where old.2[index] { updateValue(old.1[index], forKey: old.0[index]) }
    }
}
