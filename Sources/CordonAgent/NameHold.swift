import CordonCore
import CordonNftables
import Foundation
import Logging
import Synchronization

/// What `cordon status` says about holding DNS answers while enforcing names (`names.hold`).
public struct HoldCounters: Codable, Sendable, Equatable {
    /// The agent holds the queue (without it, rulesets with names are refused).
    public var bound = false
    /// Packets held (answers and the rest of their DNS-over-TCP streams).
    public var held: UInt64 = 0
    /// Element transactions committed, and the elements in them.
    public var updates: UInt64 = 0
    public var elements: UInt64 = 0
    /// Holds let go at the ceiling before the kernel acknowledged their elements.
    public var ceilingReached: UInt64 = 0
    /// Element transactions the kernel refused (the table was being replaced, say): those
    /// answers passed without their elements.
    public var failedUpdates: UInt64 = 0
    /// From reading an answer to letting it go, over the last holds, in microseconds.
    public var p50Microseconds: Int = 0
    public var p99Microseconds: Int = 0

    enum CodingKeys: String, CodingKey {
        case bound, held, updates, elements, ceilingReached = "ceiling_reached", failedUpdates = "failed_updates"
        case p50Microseconds = "p50_us", p99Microseconds = "p99_us"
    }

    public init() {}
}

/// Holds each DNS answer from the resolvers (the name-capture rule's queue, when the ruleset has
/// name entries) until the addresses it gives for those names are in the name sets, then lets it
/// go: the program that asked cannot connect before its address is allowed. Answers of names no
/// rule mentions are let go at once (and still learned).
///
/// One thread: read what is queued, learn it, add the elements in one transaction, wait for its
/// acknowledgement (at most `ceilingMilliseconds`), accept everything read. The kernel's
/// `bypass` and the queue's fail-open keep DNS working when the agent is gone or behind.
final class NameHolder: Sendable {
    /// Longest hold: past it the answer goes anyway (counted in `ceiling_reached`), because a
    /// late answer is better than none.
    static let ceilingMilliseconds = 250

    private let queue: PacketQueue
    private let stopping = Atomic<Bool>(false)
    private let state = Mutex(State())
    let done = DispatchSemaphore(value: 0)

    private struct State {
        var counters = HoldCounters()
        var samples: [Int] = []
        var next = 0
    }

    static let sampleCount = 4096

    /// - Parameter networks: the networks with name sets in the table in force now (none in
    ///   discovery), with their numbers.
    init(number: UInt16, book: NameBook, backend: NftablesBackend,
         networks: @escaping @Sendable () -> [(number: Int, network: ExternalNetwork)], logger: Logger) throws {
        queue = try PacketQueue(number: number)
        state.withLock { $0.counters.bound = true }
        Thread.detachNewThread { [self] in
            defer { done.signal() }
            var streams = DNSStreams()
            while !stopping.load(ordering: .relaxed) {
                do {
                    let packets = try queue.next(milliseconds: 500)
                    guard let last = packets.last else { continue }
                    let started = DispatchTime.now().uptimeNanoseconds
                    let now = TimeText.now()
                    var answers: [(address: IPAddress, names: [String], ttl: UInt32)] = []
                    for packet in packets { answers += book.learn(streams.feed(packet.bytes, at: now).messages, at: now) }
                    let sets = Self.elements(answers, networks: networks(), now: now)
                    var outcome: (ceiling: Bool, failed: Bool) = (false, false)
                    if !sets.isEmpty {
                        do {
                            try backend.update(elements: sets, table: CordonTables.baseName, timeoutMilliseconds: Self.ceilingMilliseconds)
                        } catch {
                            if case NftablesError.timeout = error { outcome.ceiling = true }
                            outcome.failed = true
                            logger.warning("names: adding \(sets.map(\.elements.count).reduce(0, +)) addresses failed, answers let go: \(error)")
                        }
                    }
                    try queue.accept(through: last.id)
                    let micros = Int((DispatchTime.now().uptimeNanoseconds - started) / 1000)
                    record(held: packets.count, sets: sets, micros: micros, ceiling: outcome.ceiling, failed: outcome.failed)
                } catch PacketLogError.closed {
                    return
                } catch {
                    logger.error("name hold: \(error); retrying")
                    sleep(1)
                }
            }
        }
    }

    /// The elements the answers add: each address, in the set of every network one of its
    /// names (question or CNAME target) matches, for the answer's life (see `NameCapture.lifetime`).
    static func elements(_ answers: [(address: IPAddress, names: [String], ttl: UInt32)],
                         networks: [(number: Int, network: ExternalNetwork)], now: Int64) -> [FirewallSet] {
        var bySet: [String: (field: FirewallSet.Field, elements: [IPAddress: Int64])] = [:]
        for answer in answers {
            let lifetime = CordonTables.NameCapture.lifetime(answered: now, expires: now + Int64(answer.ttl), now: now)
            for (number, network) in networks where answer.names.contains(where: { name in network.names.contains { $0.matches(name) } }) {
                let name = CordonTables.nameSetName(number, answer.address.family)
                var entry = bySet[name] ?? (answer.address.family == .ipv4 ? .ipv4Address : .ipv6Address, [:])
                entry.elements[answer.address] = max(entry.elements[answer.address] ?? 0, lifetime)
                bySet[name] = entry
            }
        }
        return bySet.sorted { $0.key < $1.key }.map { name, entry in
            FirewallSet(name: name, fields: [entry.field],
                        elements: entry.elements.sorted { $0.key < $1.key }.map { .init([FirewallSet.Span($0.key.value)], timeout: $0.value) },
                        dynamic: true)
        }
    }

    private func record(held: Int, sets: [FirewallSet], micros: Int, ceiling: Bool, failed: Bool) {
        state.withLock { s in
            s.counters.held &+= UInt64(held)
            if !sets.isEmpty {
                if failed { s.counters.failedUpdates &+= 1 } else { s.counters.updates &+= 1 }
                s.counters.elements &+= UInt64(sets.reduce(0) { $0 + $1.elements.count })
            }
            if ceiling { s.counters.ceilingReached &+= 1 }
            if s.samples.count < Self.sampleCount { s.samples.append(micros) } else { s.samples[s.next] = micros }
            s.next = (s.next + 1) % Self.sampleCount
        }
    }

    var counters: HoldCounters {
        state.withLock { s in
            var counters = s.counters
            let sorted = s.samples.sorted()
            if !sorted.isEmpty {
                counters.p50Microseconds = sorted[sorted.count / 2]
                counters.p99Microseconds = sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
            }
            return counters
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        queue.close()
        _ = done.wait(timeout: .now() + 2)
    }
}

/// Whether this kernel can enforce names: it must update the timeout of an element added again
/// (Linux 6.10), or a name looked up again would lose its address at the first answer's expiry.
enum NameKernel {
    static let minimum = (6, 10)

    static func release() -> String {
        var info = utsname()
        uname(&info)
        return withUnsafeBytes(of: &info.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// nil when names can be enforced; otherwise why not.
    static func unsupported(release: String = release()) -> String? {
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard parts.count == 2 else { return "cannot read the kernel release '\(release)'" }
        if (parts[0], parts[1]) >= minimum { return nil }
        return "Linux \(release) does not update the timeout of a set element added again; enforcing names needs \(minimum.0).\(minimum.1) or later"
    }
}
