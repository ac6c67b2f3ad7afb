import CordonWire
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The agents' long polls waiting on this replica, by host. A change of a host's desired state
/// wakes them through PostgreSQL's LISTEN/NOTIFY, whichever replica made it.
public final class DesiredWaiters: Sendable {
    private struct Waiting {
        var closed = false
        var next = 0
        var byHost: [UUID: [Int: CheckedContinuation<Void, Never>]] = [:]
    }
    private let waiting = Mutex(Waiting())

    public init() {}

    /// Returns true when the host's desired state may have changed (a notification, or `check`
    /// found it newer), false after `timeout` seconds. `check` runs once registered, so a change
    /// between it and the wait is not missed; it is the poll's first read of the state.
    public func wait(host: UUID, timeout: Double, check: @escaping @Sendable () async -> Bool) async -> Bool {
        let token = waiting.withLock { w -> Int in
            w.next += 1
            return w.next
        }
        let woken = Flag()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closed = waiting.withLock { w -> Bool in
                if !w.closed { w.byHost[host, default: [:]][token] = continuation }
                return w.closed
            }
            // Shutting down: the poll answers at once with what its first read finds.
            if closed {
                Task {
                    let changed = await check()
                    woken.value.withLock { $0 = changed }
                    continuation.resume()
                }
                return
            }
            Task { [self] in
                try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                if let continuation = take(host: host, token: token) {
                    woken.value.withLock { $0 = false }
                    continuation.resume()
                }
            }
            Task { [self] in
                if await check() { resume(host: host, token: token) }
            }
        }
        return woken.value.withLock { $0 }
    }

    private func take(host: UUID, token: Int) -> CheckedContinuation<Void, Never>? {
        waiting.withLock { w -> CheckedContinuation<Void, Never>? in
            let c = w.byHost[host]?.removeValue(forKey: token)
            if w.byHost[host]?.isEmpty == true { w.byHost[host] = nil }
            return c
        }
    }

    private func resume(host: UUID, token: Int) { take(host: host, token: token)?.resume() }

    public func wake(host: UUID) {
        let all = waiting.withLock { w -> [CheckedContinuation<Void, Never>] in Array((w.byHost.removeValue(forKey: host) ?? [:]).values) }
        for continuation in all { continuation.resume() }
    }

    /// At shutdown: every poll answers now, and new ones do not wait. A server that waits for
    /// 10,000 long polls to end by themselves outlives its unit's stop timeout and is killed.
    public func close() {
        waiting.withLock { $0.closed = true }
        wakeAll()
    }

    /// After the notification channel was lost: every poll looks again.
    public func wakeAll() {
        let all = waiting.withLock { w -> [CheckedContinuation<Void, Never>] in
            defer { w.byHost = [:] }
            return w.byHost.values.flatMap(\.values)
        }
        for continuation in all { continuation.resume() }
    }
}

/// Holds one connection in LISTEN on the desired-state channel; reconnects with back-off, and
/// wakes every poll after a gap, since notifications sent meanwhile are lost.
///
/// A connection to a paused or unreachable database neither answers nor closes, and a LISTEN on
/// it would wait forever while notifications went elsewhere: a heartbeat on the same connection
/// gives it up when it stops answering, and readiness says so meanwhile.
public struct DesiredListener: Service {
    /// How often the listening connection is asked to answer, and how long it has to.
    static let heartbeat: Double = 5
    static let heartbeatDeadline: Double = 3
    let client: PostgresClient
    let waiters: DesiredWaiters
    let logger: Logger
    private let listening = ListenerState()

    public init(client: PostgresClient, waiters: DesiredWaiters, logger: Logger) {
        self.client = client
        self.waiters = waiters
        self.logger = logger
    }

    /// nil while listening; else why not.
    public var problem: String? { listening.value.withLock { $0 } }

    struct Silent: Error, CustomStringConvertible {
        var description: String { "the listening connection did not answer a heartbeat within \(DesiredListener.heartbeatDeadline) s" }
    }

    public func run() async throws {
        let delay = Backoff()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown {
                    try await client.withConnection { connection in
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask {
                                    try await connection.listen(on: PostgresDesiredStateStore.channel) { notifications in
                                        listening.value.withLock { $0 = nil }
                                        waiters.wakeAll()
                                        delay.value.withLock { $0 = 0.2 }
                                        for try await notification in notifications {
                                            if let host = UUID(uuidString: notification.payload) { waiters.wake(host: host) }
                                        }
                                    }
                                }
                                group.addTask {
                                    while true {
                                        try await Task.sleep(for: .milliseconds(Int(Self.heartbeat * 1000)))
                                        do {
                                            try await Deadline.run(seconds: Self.heartbeatDeadline) { try await connection.query("SELECT 1", logger: logger) }
                                        } catch is Deadline.Exceeded {
                                            // Closing is local and immediate: the listen fails with it, and the pool drops the connection.
                                            listening.value.withLock { $0 = Silent().description }
                                            try? await connection.close()
                                            throw Silent()
                                        }
                                    }
                                }
                                // Either ending ends both: a listen that failed, or a connection gone silent.
                                try await group.next()
                                group.cancelAll()
                            }
                    }
                }
            } catch {
                listening.value.withLock { $0 = "not listening: \(error)" }
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                logger.warning("listening for desired-state changes failed (\(error)); retrying in \(delay.value.withLock { $0 }) s")
            }
            let wait = delay.value.withLock { d -> Double in
                defer { d = min(d * 2, 5) }
                return d
            }
            try? await Task.sleep(for: .milliseconds(Int(wait * 1000)))
        }
    }
}

/// The hosts whose agents polled, written to `last_seen` in one statement every few seconds: a
/// write (and a commit) per poll would make 10,000 agents 800 commits a second for nothing.
public final class SeenHosts: Service, Sendable {
    public static let interval: Double = 5
    private let pending = Mutex<Set<UUID>>([])
    let hosts: any HostStore
    let logger: Logger

    public init(hosts: any HostStore, logger: Logger) {
        self.hosts = hosts
        self.logger = logger
    }

    public func note(_ host: UUID) { _ = pending.withLock { $0.insert(host) } }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: .milliseconds(Int(Self.interval * 1000)))
            let batch = pending.withLock { set -> [UUID] in
                defer { set.removeAll() }
                return Array(set)
            }
            do { try await hosts.seen(batch) } catch {
                pending.withLock { $0.formUnion(batch) }
                logger.warning("could not record \(batch.count) agents as seen: \(error)")
            }
        }
    }
}

final class Backoff: Sendable {
    let value = Mutex(0.2)
}

final class ListenerState: Sendable {
    let value = Mutex<String?>("not listening yet")
}

final class Flag: Sendable {
    let value = Mutex(true)
}
