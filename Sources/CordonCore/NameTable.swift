/// What the agent learned from DNS answers: for each address, the names it was an answer for.
/// Answers come from the network, so the table is bounded three ways (addresses per name, names
/// per address, names in all) and counts what each bound turned away: a flood of unique names, or
/// one name answered with ever new addresses, costs a bounded amount of memory and says so.
public struct NameTable: Sendable {
    public struct Limits: Sendable, Equatable {
        public var addressesPerName: Int
        public var namesPerAddress: Int
        public var names: Int

        public init(addressesPerName: Int = 1000, namesPerAddress: Int = 32, names: Int = 100_000) {
            self.addressesPerName = addressesPerName
            self.namesPerAddress = namesPerAddress
            self.names = names
        }
    }

    /// One name an address answered, in Unix seconds.
    public struct Binding: Equatable, Sendable {
        public var name: String
        public var firstSeen: Int64
        public var lastSeen: Int64
        /// When the newest answer's TTL ran out.
        public var expires: Int64
        /// The name was asked for (a question), not only reached through a CNAME: what a program
        /// looked up, and so what a proposal names, rather than the CDN behind it.
        public var queried: Bool

        public init(name: String, firstSeen: Int64, lastSeen: Int64, expires: Int64, queried: Bool) {
            self.name = name
            self.firstSeen = firstSeen
            self.lastSeen = lastSeen
            self.expires = expires
            self.queried = queried
        }
    }

    /// What the limits pushed out, oldest first, since the table was made.
    public struct Evictions: Equatable, Sendable {
        public var addressesPerName = 0
        public var namesPerAddress = 0
        public var names = 0
    }

    /// One binding's identity, as the database keys it.
    public struct Pair: Hashable, Sendable {
        public var address: IPAddress
        public var name: String
        public init(address: IPAddress, name: String) {
            self.address = address
            self.name = name
        }
    }

    /// What changed since the last `takeChanges`: bindings to write (absolute values, so a
    /// repeated write is harmless) and bindings the limits pushed out.
    public struct Changes: Sendable {
        public var upserts: [(address: IPAddress, binding: Binding)] = []
        public var removals: [Pair] = []
        public var isEmpty: Bool { upserts.isEmpty && removals.isEmpty }
        public init() {}
    }

    public let limits: Limits
    public private(set) var evictions = Evictions()
    private var byAddress: [IPAddress: [Binding]] = [:]
    private var addressesByName: [String: [IPAddress: Int64]] = [:]
    private var changed: Set<Pair> = []
    private var gone: Set<Pair> = []

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Restores a binding from the database without marking it for writing; the limits apply as
    /// if it had just been learned, so a smaller limit in a new version shrinks an old table.
    public mutating func load(address: IPAddress, binding: Binding) {
        learn(address: address, names: [binding.name], ttl: 0, at: binding.lastSeen)
        if let index = byAddress[address]?.firstIndex(where: { $0.name == binding.name }) {
            byAddress[address]![index] = binding
        }
        changed.remove(Pair(address: address, name: binding.name))
    }

    /// Hands out what changed since the last call, and forgets it.
    public mutating func takeChanges() -> Changes {
        var changes = Changes()
        for pair in changed {
            guard let binding = byAddress[pair.address]?.first(where: { $0.name == pair.name }) else { continue }
            changes.upserts.append((pair.address, binding))
        }
        changes.removals = Array(gone)
        changed.removeAll()
        gone.removeAll()
        return changes
    }

    /// Puts changes back when writing them failed, so the next call hands them out again.
    public mutating func restore(_ changes: Changes) {
        for (address, binding) in changes.upserts where byAddress[address]?.contains(where: { $0.name == binding.name }) == true {
            changed.insert(Pair(address: address, name: binding.name))
        }
        for pair in changes.removals where byAddress[pair.address]?.contains(where: { $0.name == pair.name }) != true {
            gone.insert(pair)
        }
    }

    /// Every binding, by name: what `cordon names` lists.
    public var all: [(address: IPAddress, binding: Binding)] {
        byAddress.flatMap { address, bindings in bindings.map { (address, $0) } }
    }

    public var nameCount: Int { addressesByName.count }
    public var addressCount: Int { byAddress.count }

    /// An answer: `address` answers each of `names` (the question, then its CNAME chain) for `ttl`.
    public mutating func learn(address: IPAddress, names: [String], ttl: UInt32, at now: Int64) {
        let expires = now + Int64(ttl)
        for (position, name) in names.enumerated() {
            var bindings = byAddress[address] ?? []
            if let index = bindings.firstIndex(where: { $0.name == name }) {
                bindings[index].lastSeen = max(bindings[index].lastSeen, now)
                bindings[index].expires = max(bindings[index].expires, expires)
                bindings[index].queried = bindings[index].queried || position == 0
            } else {
                bindings.append(Binding(name: name, firstSeen: now, lastSeen: now, expires: expires, queried: position == 0))
                if bindings.count > limits.namesPerAddress, let oldest = bindings.indices.min(by: { bindings[$0].lastSeen < bindings[$1].lastSeen }) {
                    forget(name: bindings[oldest].name, address: address)
                    dropped(Pair(address: address, name: bindings[oldest].name))
                    bindings.remove(at: oldest)
                    evictions.namesPerAddress += 1
                }
            }
            byAddress[address] = bindings
            // Only a restore of older bindings (`load`) can push out the one just added.
            guard bindings.contains(where: { $0.name == name }) else { continue }
            changed.insert(Pair(address: address, name: name))
            gone.remove(Pair(address: address, name: name))
            var addresses = addressesByName[name] ?? [:]
            addresses[address] = now
            if addresses.count > limits.addressesPerName, let oldest = addresses.min(by: { $0.value < $1.value })?.key {
                addresses[oldest] = nil
                dropped(Pair(address: oldest, name: name))
                byAddress[oldest]?.removeAll { $0.name == name }
                if byAddress[oldest]?.isEmpty == true { byAddress[oldest] = nil }
                evictions.addressesPerName += 1
            }
            addressesByName[name] = addresses
        }
        if addressesByName.count > limits.names { evictOldestNames() }
    }

    /// The names `address` answered that were valid at `time` (learned before it, not yet expired
    /// `grace` seconds after their TTL), the most recently answered first.
    public func names(for address: IPAddress, at time: Int64, grace: Int64 = 0) -> [String] {
        bindings(for: address, from: time, to: time, grace: grace).map(\.name)
    }

    /// The bindings valid at some moment of `from...to` (connections opened over a flush
    /// interval), the most recently answered first, asked-for names before CNAME targets.
    public func bindings(for address: IPAddress, from: Int64, to: Int64, grace: Int64 = 0) -> [Binding] {
        (byAddress[address] ?? []).filter { $0.firstSeen <= to && from <= $0.expires + grace }.sorted(by: Self.newestFirst)
    }

    /// Newest answer first; then the asked-for name before the CNAME targets; then by name.
    public static func newestFirst(_ a: Binding, _ b: Binding) -> Bool {
        if a.lastSeen != b.lastSeen { return a.lastSeen > b.lastSeen }
        if a.queried != b.queried { return a.queried }
        return a.name < b.name
    }

    public func bindings(for address: IPAddress) -> [Binding] { byAddress[address] ?? [] }

    /// The addresses `name` was answered with, in address order.
    public func addresses(for name: String) -> [IPAddress] { (addressesByName[name] ?? [:]).keys.sorted() }

    private mutating func dropped(_ pair: Pair) {
        changed.remove(pair)
        gone.insert(pair)
    }

    private mutating func forget(name: String, address: IPAddress) {
        addressesByName[name]?[address] = nil
        if addressesByName[name]?.isEmpty == true { addressesByName[name] = nil }
    }

    /// Over the limit: the least recently answered names go, a tenth of the limit at once, so a
    /// flood costs one sort per many insertions rather than a scan per insertion.
    private mutating func evictOldestNames() {
        let excess = addressesByName.count - limits.names + max(1, limits.names / 10)
        let oldest = addressesByName.map { ($0.key, $0.value.values.max() ?? 0) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }.prefix(excess)
        for (name, _) in oldest {
            for address in (addressesByName[name] ?? [:]).keys {
                dropped(Pair(address: address, name: name))
                byAddress[address]?.removeAll { $0.name == name }
                if byAddress[address]?.isEmpty == true { byAddress[address] = nil }
            }
            addressesByName[name] = nil
            evictions.names += 1
        }
    }
}
