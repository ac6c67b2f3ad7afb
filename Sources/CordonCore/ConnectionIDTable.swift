/// Live connections already counted (by `ConnectionTuple.connectionKey(id:)`), each with the
/// re-sync generation it was seen in.
///
/// Every event inserts or removes one id, and the table holds as many ids as the kernel holds
/// connections (hundreds of thousands on a busy host), so this is an open-addressing table with
/// linear probing and backward-shift deletion over two flat arrays: one multiply to hash, no
/// tombstones, no per-entry allocation. Swift's Dictionary spent more time hashing than the rest
/// of the event path together.
public struct ConnectionIDTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt32]
    private var used: [Bool]
    private var mask: Int
    public private(set) var count = 0

    public init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: 0, count: size)
        values = [UInt32](repeating: 0, count: size)
        used = [Bool](repeating: false, count: size)
        mask = size - 1
    }

    @inline(__always)
    private func home(_ id: UInt64) -> Int {
        Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    private func slot(of id: UInt64) -> Int? {
        var index = home(id)
        while used[index] {
            if keys[index] == id { return index }
            index = (index + 1) & mask
        }
        return nil
    }

    public subscript(id: UInt64) -> UInt32? {
        slot(of: id).map { values[$0] }
    }

    public func contains(_ id: UInt64) -> Bool { slot(of: id) != nil }

    /// Inserts or replaces; returns the previous generation, if any.
    @discardableResult
    public mutating func updateValue(_ generation: UInt32, forKey id: UInt64) -> UInt32? {
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
    public mutating func removeValue(forKey id: UInt64) -> UInt32? {
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
    public mutating func filter(_ keep: (UInt64, UInt32) -> Bool) {
        var kept = ConnectionIDTable(capacity: count)
        for index in 0..<keys.count where used[index] && keep(keys[index], values[index]) {
            kept.updateValue(values[index], forKey: keys[index])
        }
        self = kept
    }

    public var ids: [UInt64] { (0..<keys.count).filter { used[$0] }.map { keys[$0] } }

    private mutating func grow() {
        let old = (keys, values, used)
        self = ConnectionIDTable(capacity: keys.count)
        for index in 0..<old.0.count where old.2[index] { updateValue(old.1[index], forKey: old.0[index]) }
    }
}

extension ConnectionTuple {
    /// A live connection's identity for the recorder. The kernel's 32-bit id alone is a hash and
    /// collides: 20,000 live connections give about a 5 % chance that two share one, and the
    /// second would be taken as already counted. The original tuple never changes over a
    /// connection's life (it is conntrack's own hash key), so its hash fills the high half.
    public func connectionKey(id: UInt32) -> UInt64 {
        @inline(__always) func mix(_ x: UInt64) -> UInt64 {
            var z = x &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            return z ^ (z >> 31)
        }
        var h = mix(UInt64(transport) | UInt64(sourcePort) << 8 | UInt64(destinationPort) << 24 | UInt64(icmpType) << 40)
        h = mix(h ^ source.high)
        h = mix(h ^ source.low)
        h = mix(h ^ destination.high)
        h = mix(h ^ destination.low)
        return h & 0xFFFF_FFFF_0000_0000 | UInt64(id)
    }
}
