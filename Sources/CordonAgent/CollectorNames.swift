#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import Foundation
import Synchronization

/// The collectors given by name, resolved: at start, then every `interval` seconds on a thread
/// of its own (never in a transition: an isolation must not wait for DNS). An address the name
/// stops answering with stays in the channel for `keep` seconds, so that a session opened to it
/// survives a rotation; a new one triggers `onChange`, which re-installs the channel.
final class CollectorNames: Sendable {
    typealias Named = ManagementChannel.NamedCollector
    static let interval: Double = 30
    static let keep: Int64 = 600

    let collectors: [Named]
    private let state = Mutex<[Named: [IPAddress: Int64]]>([:])
    private let stopping = Atomic<Bool>(false)
    private let wakeRequested = Atomic<Bool>(false)

    init(_ collectors: [Named]) {
        self.collectors = collectors
    }

    /// The addresses in the channel now, per collector.
    var addresses: [Named: [IPAddress]] {
        state.withLock { $0.mapValues { $0.keys.sorted() } }
    }

    /// Collectors with no address yet: `enforce` and `release` fail their check on them.
    var unresolved: [Named] {
        let known = addresses
        return collectors.filter { (known[$0] ?? []).isEmpty }
    }

    /// Resolves every name once; returns the new addresses found, as text for the log.
    @discardableResult
    func resolve(now: Int64 = TimeText.now()) -> [String] {
        var found: [String] = []
        for collector in collectors {
            let answered = Self.lookup(collector.name)
            state.withLock { table in
                var known = table[collector] ?? [:]
                for address in answered {
                    if known[address] == nil { found.append("\(collector.name) → \(address)") }
                    known[address] = now
                }
                known = known.filter { now - $0.value < Self.keep }
                table[collector] = known
            }
        }
        return found
    }

    func start(onChange: @escaping @Sendable ([String]) -> Void) {
        guard !collectors.isEmpty else { return }
        Thread.detachNewThread { [self] in
            while !stopping.load(ordering: .relaxed) {
                for _ in 0..<Int(Self.interval * 4) where !stopping.load(ordering: .relaxed) {
                    if wakeRequested.exchange(false, ordering: .relaxed) { break }
                    usleep(250_000)
                }
                guard !stopping.load(ordering: .relaxed) else { return }
                let found = resolve()
                if !found.isEmpty { onChange(found) }
            }
        }
    }

    func stop() { stopping.store(true, ordering: .relaxed) }

    /// Resolves again now (SIGHUP), on the collectors' thread.
    func wake() { wakeRequested.store(true, ordering: .relaxed) }

    /// glibc's resolver, through the resolvers of the management channel (always allowed).
    static func lookup(_ name: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let socketAddress = info.pointee.ai_addr {
                switch Int32(socketAddress.pointee.sa_family) {
                case AF_INET:
                    let bytes = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin_addr) { Array($0) } }
                    if let address = IPAddress(bytes: bytes[...]) { addresses.append(address) }
                case AF_INET6:
                    let bytes = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) } }
                    if let address = IPAddress(bytes: bytes[...]) { addresses.append(address) }
                default: break
                }
            }
            cursor = info.pointee.ai_next
        }
        return Array(Set(addresses)).sorted()
    }
}
