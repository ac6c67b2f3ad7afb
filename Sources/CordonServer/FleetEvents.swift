import CordonWire
import Foundation
import Logging

/// What open console pages are told: which hosts and rollouts changed, so each page re-reads
/// what it shows of them. One watcher per replica, running only while a page listens, compares
/// the fleet's state every `period` with what it saw before; changes made through any replica
/// (an agent's report, an analyst's request, the rollout driver) are in the database, so every
/// replica's pages see them.
public actor FleetEvents {
    let stores: Stores
    let logger: Logger
    let period: Duration
    private var listeners: [UUID: AsyncStream<String>.Continuation] = [:]
    private var watcher: Task<Void, Never>?
    private var hosts: [String: String] = [:]
    private var rollouts: [String: String] = [:]
    /// Looks taken since a page first listened (the first is the baseline, which sends nothing).
    public private(set) var looks = 0

    public init(stores: Stores, logger: Logger, period: Duration = .seconds(1)) {
        self.stores = stores
        self.logger = logger
        self.period = period
    }

    /// The events for one page, as server-sent event text; ends when the page goes.
    public func listen() -> AsyncStream<String> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(64))
        continuation.onTermination = { [weak self] _ in Task { await self?.drop(id) } }
        listeners[id] = continuation
        if watcher == nil {
            watcher = Task { [weak self] in await self?.watch() }
        }
        return stream
    }

    private func drop(_ id: UUID) {
        listeners[id] = nil
        if listeners.isEmpty {
            watcher?.cancel()
            watcher = nil
            hosts = [:]
            rollouts = [:]
            looks = 0
        }
    }

    private func watch() async {
        var baseline = true
        while !Task.isCancelled {
            do {
                try await look(baseline: baseline)
                baseline = false
            } catch {
                logger.warning("console events: reading the fleet failed: \(error)")
            }
            try? await Task.sleep(for: period)
        }
    }

    /// Compares each host's and rollout's visible state with the last look and sends what moved.
    private func look(baseline: Bool) async throws {
        let hostsNow = try await stores.hosts.marks()
        var rolloutsNow: [String: String] = [:]
        for rollout in try await stores.rollouts.rollouts(limit: 100) {
            let view = rollout.view(withHosts: false)
            rolloutsNow[view.id] = String(decoding: Wire.encode(view), as: UTF8.self)
        }
        defer {
            hosts = hostsNow
            rollouts = rolloutsNow
        }
        looks += 1
        guard !baseline else { return }
        var events: [String] = []
        for (id, state) in hostsNow where hosts[id] != state { events.append(Self.event("host", id)) }
        for id in hosts.keys where hostsNow[id] == nil { events.append(Self.event("host", id)) }
        for (id, state) in rolloutsNow where rollouts[id] != state { events.append(Self.event("rollout", id)) }
        // A comment every 15 s keeps proxies from closing a quiet stream, and lets each stream
        // check its lifetime.
        if looks % 15 == 0 { events.append(": keep-alive\n\n") }
        guard !events.isEmpty else { return }
        let text = events.joined()
        for listener in listeners.values { listener.yield(text) }
    }

    static func event(_ kind: String, _ id: String) -> String {
        "event: \(kind)\ndata: {\"id\":\"\(id)\"}\n\n"
    }
}
