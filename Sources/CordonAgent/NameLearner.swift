import CordonCore
import CordonNftables
import CordonStore
import Foundation
import Logging
import Synchronization

/// What `cordon status` says about learning names (`names` in its JSON).
public struct NameCounters: Codable, Sendable, Equatable {
    /// DNS responses read from the resolvers (UDP datagrams and TCP messages).
    public var responses: UInt64 = 0
    /// Address-name answers taken from them.
    public var answers: UInt64 = 0
    /// Responses that did not parse (counted, never guessed at).
    public var malformed: UInt64 = 0
    /// Times the kernel dropped copies of answers (ENOBUFS): those names were not learned.
    public var lostLogMessages: UInt64 = 0
    /// DNS-over-TCP streams given up at a gap or pushed out by newer ones.
    public var abandonedStreams: UInt64 = 0
    /// Names and addresses held now.
    public var names = 0
    public var addresses = 0
    /// What the table's limits pushed out.
    public var evictedAddressesPerName = 0
    public var evictedNamesPerAddress = 0
    public var evictedNames = 0
    /// Holding answers while enforcing names (absent when the agent could not bind the queue).
    public var hold: HoldCounters?

    enum CodingKeys: String, CodingKey {
        case responses, answers, malformed, lostLogMessages = "lost_log_messages", abandonedStreams = "abandoned_streams"
        case names, addresses, evictedAddressesPerName = "evicted_addresses_per_name"
        case evictedNamesPerAddress = "evicted_names_per_address", evictedNames = "evicted_names", hold
    }

    public init() {}
}

/// The agent's name table, shared by the thread that learns answers and the flush that names
/// the flows' new connections and writes both to the database.
public final class NameBook: Sendable {
    /// Seconds past an answer's TTL during which a connection to its address still carries its
    /// name: programs cache answers longer than their TTL (the JVM 30 s by default).
    public static let attributionGrace: Int64 = 30
    /// An answer read up to this many seconds after the connection it preceded still names it:
    /// the answer and the connection's event arrive on two sockets, read by two threads.
    public static let readingSkew: Int64 = 1

    private struct State {
        var table: NameTable
        var counters = NameCounters()
        var carried: (version: Int64, sets: [String: [(address: IPAddress, expires: Int64)]])?
    }

    private let state: Mutex<State>

    public init(table: NameTable) {
        state = Mutex(State(table: table))
    }

    /// Learns the answers of DNS messages one resolver sent; returns them.
    @discardableResult
    public func learn(_ messages: [[UInt8]], at now: Int64) -> [(address: IPAddress, names: [String], ttl: UInt32)] {
        guard !messages.isEmpty else { return [] }
        var parsed: [DNSResponse] = []
        var malformed: UInt64 = 0
        for message in messages {
            do { parsed.append(try DNSResponse(parsing: message)) } catch { malformed += 1 }
        }
        let answers = parsed.flatMap { $0.addressNames() }
        state.withLock { s in
            s.counters.responses &+= UInt64(messages.count)
            s.counters.malformed &+= malformed
            for answer in answers { s.table.learn(address: answer.address, names: answer.names, ttl: answer.ttl, at: now) }
            s.counters.answers &+= UInt64(answers.count)
        }
        return answers
    }

    /// What a table made now puts in the name sets of `ruleset`: per network with name entries,
    /// every address a matching name was answered with whose element would still live, and the
    /// elements a restart carried over from the kernel for this same ruleset version.
    public func elements(for ruleset: Ruleset, version: Int64?, now: Int64) -> [String: [NameElement]] {
        let networks = CordonTables.nameSetNetworks(ruleset)
        guard !networks.isEmpty else { return [:] }
        return state.withLock { s in
            var result: [String: [IPAddress: Int64]] = [:]
            for (address, binding) in s.table.all {
                let lifetime = CordonTables.NameCapture.lifetime(answered: binding.lastSeen, expires: binding.expires, now: now)
                guard lifetime > 0 else { continue }
                for (_, network) in networks where network.names.contains(where: { $0.matches(binding.name) }) {
                    result[network.name, default: [:]][address] = max(result[network.name]?[address] ?? 0, lifetime)
                }
            }
            if let carried = s.carried, carried.version == version {
                for (number, network) in networks {
                    for family in AddressFamily.allCases {
                        for (address, expires) in carried.sets[CordonTables.nameSetName(number, family)] ?? [] where expires > now {
                            result[network.name, default: [:]][address] = max(result[network.name]?[address] ?? 0, expires - now)
                        }
                    }
                }
            }
            return result.mapValues { $0.map { NameElement(address: $0.key, timeout: $0.value) }.sorted { $0.address < $1.address } }
        }
    }

    /// The name sets' elements the kernel held at start, for the ruleset version then in force.
    public func carry(version: Int64, sets: [String: [(address: IPAddress, expires: Int64)]]) {
        state.withLock { $0.carried = (version, sets) }
    }

    /// The names of new outbound connections: for each flow, the names valid when one of its
    /// connections opened (`FlowRecorder.takeOpened`).
    public func attribute(_ opened: [FlowKey: ClosedRange<Int64>]) -> [FlowNames] {
        state.withLock { s in
            opened.compactMap { key, times in
                let bindings = s.table.bindings(for: key.remote.address, from: times.lowerBound,
                                                to: times.upperBound + Self.readingSkew, grace: Self.attributionGrace)
                guard !bindings.isEmpty else { return nil }
                return FlowNames(key: key, names: bindings, seen: times.upperBound)
            }
        }
    }

    public func takeChanges() -> NameTable.Changes { state.withLock { $0.table.takeChanges() } }
    public func restore(_ changes: NameTable.Changes) { state.withLock { $0.table.restore(changes) } }

    func noteLost() { state.withLock { $0.counters.lostLogMessages &+= 1 } }
    func noteAbandoned(_ total: UInt64) { state.withLock { $0.counters.abandonedStreams = total } }

    public var counters: NameCounters {
        state.withLock { s in
            var counters = s.counters
            counters.names = s.table.nameCount
            counters.addresses = s.table.addressCount
            counters.evictedAddressesPerName = s.table.evictions.addressesPerName
            counters.evictedNamesPerAddress = s.table.evictions.namesPerAddress
            counters.evictedNames = s.table.evictions.names
            return counters
        }
    }
}

/// Reads the copies of the resolvers' answers (the name-capture rule's NFLOG group) on a thread
/// of its own and feeds them to the book. Nothing waits for it: the packets went on their way
/// when the kernel copied them.
final class NameLearner: Sendable {
    private let log: PacketLog
    private let stopping = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)

    /// Streams idle this long are forgotten (a resolver that never closed its TCP connection).
    static let streamIdleSeconds: Int64 = 60

    /// - Throws: `PacketLogError` when the group cannot be bound (another program holds it).
    init(group: UInt16, book: NameBook, logger: Logger) throws {
        // One message per answer, sent at once: a connection right after a lookup should find
        // its name already learned (the flush names connections seconds later in any case).
        log = try PacketLog(group: group, receiveBuffer: 4 << 20, queueThreshold: 1, flushTimeout: 0.01,
                            idleTimeout: 0.5, keepingPackets: true)
        Thread.detachNewThread { [self] in
            defer { done.signal() }
            var streams = DNSStreams()
            var lastExpiry = TimeText.now()
            var reported: UInt64 = 0
            while !stopping.load(ordering: .relaxed) {
                do {
                    let now = TimeText.now()
                    let outcome = try log.next { packet in
                        guard packet.prefix == CordonTables.nameLogPrefix else { return }
                        book.learn(streams.feed(packet.bytes, at: now).messages, at: now)
                    }
                    if outcome == .overrun { book.noteLost() }
                    if now - lastExpiry >= 10 {
                        streams.expire(idleFor: Self.streamIdleSeconds, at: now)
                        lastExpiry = now
                    }
                    if streams.counters.abandonedStreams != reported {
                        reported = streams.counters.abandonedStreams
                        book.noteAbandoned(reported)
                    }
                } catch PacketLogError.closed {
                    return
                } catch {
                    logger.error("name learning: \(error); retrying")
                    sleep(1)
                }
            }
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        log.close()
        _ = done.wait(timeout: .now() + 2)
    }
}
