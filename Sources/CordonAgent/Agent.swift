#if canImport(Glibc)
import Glibc
#endif
import CordonConntrack
import CordonCore
import CordonNftables
import CordonStore
import Foundation
import Synchronization

/// The long-running agent: discovery mode in this version.
///
/// Threads: one reads conntrack events, one re-reads the table after lost events, one watches the
/// host's addresses, one answers the control socket; the calling thread flushes to SQLite on a
/// timer and waits for signals (SIGTERM/SIGINT stop, SIGHUP flushes at once).
public final class Agent: Sendable {
    public let config: AgentConfig
    private let log: @Sendable (String) -> Void
    private let stopping = Atomic<Bool>(false)
    private let lastFlush = Atomic<Int64>(0)
    private let flushErrors = Atomic<UInt64>(0)
    private let startedAt = TimeText.now()
    /// agent_state entry holding the conntrack ids counted by the last run that are still alive.
    static let liveConnectionsState = "live_connection_ids"

    public init(config: AgentConfig, log: @escaping @Sendable (String) -> Void) {
        self.config = config
        self.log = log
    }

    /// Runs until SIGTERM or SIGINT; flushes, removes the discovery table and returns.
    public func run() throws {
        // Blocked in every thread so that only `sigtimedwait` below sees them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        // The record says whom this host talks to: readable by root only (database, WAL, directory).
        umask(0o077)
        let directory = (config.database as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let store = try FlowStore(path: config.database)
        var aggregator = FlowAggregator(remoteCap: config.remoteCap)
        for (key, stats) in try store.loadAll() { aggregator.load(key, stats) }
        try store.setState("mode", "discovery")
        let recorder = FlowRecorder(aggregator: aggregator)
        if let saved = try store.state(Self.liveConnectionsState) {
            recorder.adoptLiveConnections(saved.split(separator: ",").compactMap { UInt32($0) })
        }
        log("database \(config.database): \(recorder.flowCount) flow aggregates carried over")

        let control = try ControlServer(path: config.socket)
        let backend = NftablesBackend()
        do {
            try backend.replace(CordonTables.discovery())
        } catch {
            control.remove()
            throw error
        }
        log("installed table inet \(CordonTables.baseName) (accept-all; makes the kernel track connections)")
        do {
            try record(recorder, store: store, control: control, backend: backend, signals: &signals)
        } catch {
            // Starting failed half-way: leave the host as it was found.
            control.remove()
            try? backend.remove(table: CordonTables.baseName)
            throw error
        }
    }

    private func record(_ recorder: FlowRecorder, store: FlowStore, control: ControlServer, backend: NftablesBackend,
                        signals: inout sigset_t) throws {
        recorder.setLocalAddresses(HostAddresses.read())
        try HostAddresses.watch { recorder.setLocalAddresses($0) }

        let resync = ResyncWorker(recorder: recorder, log: log)
        let capture = try startCapture(recorder: recorder, resync: resync)
        // Subscribed first, dumped second: a connection opened in between is in both, and the
        // recorder counts it once (by conntrack id).
        let generation = recorder.beginDump()
        let existing = try ConntrackTable.dump()
        recorder.applyDump(existing, generation: generation, at: TimeText.now(), repair: false)
        log("conntrack table read: \(existing.count) existing connections")

        control.serve { [self] request in
            switch request.command {
            case "status":
                let counters = recorder.counters
                let last = lastFlush.load(ordering: .relaxed)
                let approved = (try? store.latestRuleset()).flatMap { $0 }.map {
                    StatusReport.ApprovedRuleset(version: $0.version, digest: $0.digest, approvedAt: TimeText.rfc3339($0.approvedAt),
                                                 operator: $0.operator)
                }
                let report = StatusReport(
                    mode: "discovery", isolated: false, flows: recorder.flowCount, events: counters.events,
                    lostEvents: counters.lostEvents, resyncs: counters.resyncs,
                    recoveredConnections: counters.recoveredConnections, ignoredEvents: counters.ignoredEvents,
                    flushErrors: flushErrors.load(ordering: .relaxed), lastFlush: last == 0 ? nil : TimeText.rfc3339(last),
                    database: config.database, backend: backend.name, pid: getpid(),
                    startedAt: TimeText.rfc3339(startedAt), receiveBufferBytes: capture.receiveBuffer, ruleset: approved)
                return (try? JSONEncoder().encode(report)) ?? Data()
            default:
                return Data(#"{"error":"unknown command"}"#.utf8)
            }
        }
        log("listening on \(config.socket); flushing every \(config.flushInterval) s")

        var interval = timespec(tv_sec: Int(config.flushInterval),
                                tv_nsec: Int((config.flushInterval - Double(Int(config.flushInterval))) * 1e9))
        while true {
            let signal = sigtimedwait(&signals, nil, &interval)
            if signal == SIGTERM || signal == SIGINT {
                log("signal \(signal): flushing and stopping")
                break
            }
            // A timeout, or SIGHUP: flush now.
            flush(recorder, to: store)
        }
        // Let the event thread read what the kernel already queued, so that the last flush holds
        // every connection reported before the signal.
        stopping.store(true, ordering: .relaxed)
        capture.waker.wake()
        if capture.done.wait(timeout: .now() + 2) == .timedOut { log("event thread did not finish; flushing what it read") }
        flush(recorder, to: store)
        do {
            try store.setState(Self.liveConnectionsState, recorder.liveConnectionIDs().map(String.init).joined(separator: ","))
        } catch {
            log("could not save live connection ids (a restart will count them again): \(error)")
        }
        control.remove()
        do {
            try backend.remove(table: CordonTables.baseName)
        } catch {
            log("could not remove table inet \(CordonTables.baseName): \(error)")
        }
        log("stopped: \(recorder.flowCount) flow aggregates stored")
    }

    private func flush(_ recorder: FlowRecorder, to store: FlowStore) {
        let changes = recorder.takeChanges()
        do {
            try store.write(changes)
            lastFlush.store(TimeText.now(), ordering: .relaxed)
        } catch {
            recorder.restore(changes)
            flushErrors.add(1, ordering: .relaxed)
            log("flush failed, will retry: \(error)")
        }
    }

    /// The event thread, as the main thread sees it.
    private struct Capture: Sendable {
        /// Bytes of receive buffer the kernel granted.
        let receiveBuffer: Int
        let waker: ConntrackEvents.Waker
        /// Signalled when the thread has read its last events.
        let done: DispatchSemaphore
    }

    private func startCapture(recorder: FlowRecorder, resync: ResyncWorker) throws -> Capture {
        let ready = Mutex<Result<Capture, any Error>?>(nil)
        let semaphore = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let bufferBytes = config.receiveBufferMiB << 20
        Thread.detachNewThread { [self] in
            let subscription: ConntrackEvents
            do {
                subscription = try ConntrackEvents(receiveBuffer: bufferBytes)
                ready.withLock {
                    $0 = .success(Capture(receiveBuffer: subscription.receiveBufferSize, waker: subscription.waker, done: done))
                }
                semaphore.signal()
            } catch {
                ready.withLock { $0 = .failure(error) }
                semaphore.signal()
                return
            }
            defer { done.signal() }
            while !stopping.load(ordering: .relaxed) {
                do {
                    let outcome = try subscription.next { recorder.handle($0, at: TimeText.now()) }
                    if outcome == .overrun {
                        recorder.noteLostEvents()
                        resync.request()
                    }
                } catch {
                    log("conntrack events: \(error); retrying")
                    sleep(1)
                }
            }
            // Stopping: take what is already queued, without waiting for more.
            while case .events = (try? subscription.next(wait: false) { recorder.handle($0, at: TimeText.now()) }) ?? .idle {}
        }
        semaphore.wait()
        return try ready.withLock { $0! }.get()
    }
}

/// Re-reads the conntrack table after lost events, off the event thread so reading events goes on
/// meanwhile. Requests that arrive during a re-read are folded into one more re-read.
final class ResyncWorker: Sendable {
    private let pending = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)

    init(recorder: FlowRecorder, log: @escaping @Sendable (String) -> Void) {
        Thread.detachNewThread { [self] in
            while true {
                wake.wait()
                guard pending.exchange(false, ordering: .acquiringAndReleasing) else { continue }
                let generation = recorder.beginDump()
                do {
                    let entries = try ConntrackTable.dump()
                    recorder.applyDump(entries, generation: generation, at: TimeText.now(), repair: true)
                } catch {
                    recorder.applyDump([], generation: 0, at: TimeText.now(), repair: true)
                    log("re-reading the conntrack table failed: \(error)")
                }
            }
        }
    }

    func request() {
        if !pending.exchange(true, ordering: .acquiringAndReleasing) { wake.signal() }
    }
}
