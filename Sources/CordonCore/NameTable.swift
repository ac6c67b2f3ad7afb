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
    }

    /// What the limits pushed out, oldest first, since the table was made.
    public struct Evictions: Equatable, Sendable {
        public var addressesPerName = 0
        public var namesPerAddress = 0
        public var names = 0
    }

    public let limits: Limits
    public private(set) var evictions = Evictions()
    private var byAddress: [IPAddress: [Binding]] = [:]
    private var addressesByName: [String: [IPAddress: Int64]] = [:]

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    public var nameCount: Int { addressesByName.count }
    public var addressCount: Int { byAddress.count }

    /// An answer: `address` answers each of `names` (the question, then its CNAME chain) for `ttl`.
    public mutating func learn(address: IPAddress, names: [String], ttl: UInt32, at now: Int64) {
        let expires = now + Int64(ttl)
        for name in names {
            var bindings = byAddress[address] ?? []
            if let index = bindings.firstIndex(where: { $0.name == name }) {
                bindings[index].lastSeen = now
                bindings[index].expires = max(bindings[index].expires, expires)
            } else {
                bindings.append(Binding(name: name, firstSeen: now, lastSeen: now, expires: expires))
                if bindings.count > limits.namesPerAddress, let oldest = bindings.indices.min(by: { bindings[$0].lastSeen < bindings[$1].lastSeen }) {
                    forget(name: bindings[oldest].name, address: address)
                    bindings.remove(at: oldest)
                    evictions.namesPerAddress += 1
                }
            }
            byAddress[address] = bindings
            var addresses = addressesByName[name] ?? [:]
            addresses[address] = now
            if addresses.count > limits.addressesPerName, let oldest = addresses.min(by: { $0.value < $1.value })?.key {
                addresses[oldest] = nil
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
        (byAddress[address] ?? []).filter { $0.firstSeen <= time && time <= $0.expires + grace }
            .sorted { ($0.lastSeen, $0.name) > ($1.lastSeen, $1.name) }.map(\.name)
    }

    public func bindings(for address: IPAddress) -> [Binding] { byAddress[address] ?? [] }

    /// The addresses `name` was answered with, in address order.
    public func addresses(for name: String) -> [IPAddress] { (addressesByName[name] ?? [:]).keys.sorted() }

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
                byAddress[address]?.removeAll { $0.name == name }
                if byAddress[address]?.isEmpty == true { byAddress[address] = nil }
            }
            addressesByName[name] = nil
            evictions.names += 1
        }
    }
}
