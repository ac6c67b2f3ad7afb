#if canImport(Glibc)
import Glibc
#endif
import CordonConntrack
import CordonCore
import CordonNftables
import CordonStore
import CordonTelemetry
import CordonWire
import Foundation
import Logging
import Synchronization

/// The long-running agent: records flows, and moves the firewall between discovery and
/// default-reject, or isolates it, when an operator says so (`TransitionRunner`).
///
/// Threads: one reads conntrack events, one reads the packets enforcement refuses (NFLOG), one
/// re-reads the table after lost events, one watches the host's addresses, one answers the
/// control socket; the calling thread flushes to SQLite on a timer, watches the confirmation
/// deadline and waits for signals (SIGTERM/SIGINT stop, SIGHUP flushes at once).
public final class Agent: Sendable {
    public let config: AgentConfig
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private let lastFlush = Atomic<Int64>(0)
    private let flushErrors = Atomic<UInt64>(0)
    private let startedAt = TimeText.now()
    /// agent_state entry holding the conntrack ids counted by the last run that are still alive.
    /// Connection keys (id and tuple hash); 0.1.0's bare ids under `live_connection_ids` are
    /// ignored: after that upgrade a connection open across it counts once more, as after a crash.
    static let liveConnectionsState = "live_connection_keys"

    /// The collectors given by name, resolved while the agent runs.
    private let collectorNames: CollectorNames
    /// The fleet server's extra whitelist, read from the database before the first table goes in
    /// and kept current by the fleet link.
    private let serverWhitelist = ServerWhitelist()
    private let metrics = AgentMetrics()
    /// systemd's `Type=notify`: READY once the tables are in and the socket answers, STATUS on
    /// every change of mode or isolation, WATCHDOG from the main loop.
    private let notifier: SystemdNotifier

    public init(config: AgentConfig, logger: Logger, notifier: SystemdNotifier = SystemdNotifier()) {
        self.config = config
        self.logger = logger
        self.notifier = notifier
        collectorNames = CollectorNames(config.management.collectorNames)
    }

    /// The channel to install now, with the collectors by name at their current addresses.
    private func management() -> ManagementChannel {
        var channel = config.effectiveManagement(named: collectorNames.addresses)
        for endpoint in serverWhitelist.endpoints where !channel.extra.contains(endpoint) { channel.extra.append(endpoint) }
        return channel
    }

    /// Runs until SIGTERM or SIGINT; flushes, leaves the firewall as `TransitionRunner.stop` says, returns.
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
        // One agent per database, held until this process ends.
        // A CLI command acting without an agent holds it for seconds: wait for it, not for an agent.
        let databaseLock = try ProcessLock(path: config.database + ".lock", guarding: "database \(config.database)", waitingForCommands: 30)
        defer { withExtendedLifetime(databaseLock) {} }
        let store = try FlowStore(path: config.database)
        if config.fleet != nil { serverWhitelist.load(from: store) }
        var aggregator = FlowAggregator(remoteCap: config.remoteCap)
        for (key, stats) in try store.loadAll() { aggregator.load(key, stats) }
        let recorder = FlowRecorder(aggregator: aggregator)
        if let saved = try store.state(Self.liveConnectionsState) {
            recorder.adoptLiveConnections(saved.split(separator: ",").compactMap { UInt64($0) })
        }
        let names = NameBook(table: try store.loadNames(limits: config.nameLimits))
        logger.info("database \(config.database): \(recorder.flowCount) flow aggregates carried over, \(names.counters.names) names")

        let control = try ControlServer(path: config.socket)
        let backend = NftablesBackend(recordingInstalled: true)
        let runner: TransitionRunner
        // Checks after enforce and release: a TCP connect to each collector, and with a fleet
        // server an authenticated round trip to it instead of its bare connect.
        let link = FleetLinkSlot()
        let serverEndpoints = config.fleetEndpoints
        // Collectors by name: resolved before the first table goes in.
        for found in collectorNames.resolve() { logger.info("collector \(found)") }
        for collector in collectorNames.unresolved { logger.warning("collector \(collector) does not resolve yet; enforce and release will fail their check until it does") }
        let collectorNames = self.collectorNames
        let probe: @Sendable ([ManagementChannel.Endpoint], Double) -> [String] = { collectors, timeout in
            let unresolved = collectorNames.unresolved.map { "collector \($0) does not resolve" }
            guard let fleet = link.current else { return unresolved + ManagementProbe.check(collectors, timeoutSeconds: timeout) }
            var failures = unresolved + ManagementProbe.check(collectors.filter { !serverEndpoints.contains($0) }, timeoutSeconds: timeout)
            if let failure = fleet.healthCheck(timeout: max(timeout, 2)) { failures.append(failure) }
            return failures
        }
        // Names: the answers are held (while a ruleset with name entries is in force) by a queue
        // bound before the first table goes in, so that such a ruleset can be installed at once.
        let inForce = NamedNetworksInForce(store: store)
        let holder: NameHolder?
        let namesUnavailable: String?
        let group = CordonTables.NameCapture.group(after: config.logGroup)
        if let reason = NameKernel.unsupported() {
            (holder, namesUnavailable) = (nil, reason)
        } else {
            do {
                holder = try NameHolder(number: group, book: names, backend: backend, networks: { inForce.networks }, logger: logger)
                namesUnavailable = nil
            } catch {
                (holder, namesUnavailable) = (nil, "the agent cannot hold DNS answers in queue \(group): \(error)")
                logger.warning("rulesets with name entries will be refused: \(namesUnavailable!)")
            }
        }
        carryOverNameSets(backend: backend, store: store, names: names)
        do {
            var environment = TransitionRunner.Environment(management: { [self] in management() },
                                                           logGroup: config.logGroup, probe: probe)
            environment.nameElements = { ruleset, version in names.elements(for: ruleset, version: version, now: TimeText.now()) }
            environment.namesUnavailable = { namesUnavailable }
            environment.applied = { [metrics] duration, ok in metrics.applied(in: duration, ok: ok) }
            runner = try TransitionRunner(backend: backend, store: store, environment: environment, logger: logger)
            inForce.runner = runner
            try runner.start()
            // A collector name that answers a new address: the channel in force is made again
            // (the same state, re-installed), in enforcement and in isolation alike.
            collectorNames.start { [logger] found in
                logger.notice("collector address changed (\(found.joined(separator: ", "))): re-installing the management channel")
                let answer = runner.handle(Engine.Request(.tampered("the management channel changed: collector \(found.joined(separator: ", "))")))
                if !answer.ok { logger.error("re-installing the management channel failed: \(answer.message)") }
            }
        } catch {
            // The kernel keeps what it had: nothing was installed, or the transaction was refused.
            control.remove()
            throw error
        }
        do {
            try record(recorder, names: names, holder: holder, store: store, control: control, backend: backend, runner: runner, link: link,
                       signals: &signals)
        } catch {
            // Starting failed half-way: discovery's table goes, enforced rules stay (fail-closed).
            control.remove()
            runner.stop()
            throw error
        }
    }

    private func record(_ recorder: FlowRecorder, names: NameBook, holder: NameHolder?, store: FlowStore, control: ControlServer, backend: NftablesBackend,
                        runner: TransitionRunner, link: FleetLinkSlot, signals: inout sigset_t) throws {
        recorder.setLocalAddresses(HostAddresses.read())
        try HostAddresses.watch { recorder.setLocalAddresses($0) }

        let resync = ResyncWorker(recorder: recorder, logger: logger)
        let capture = try startCapture(recorder: recorder, resync: resync)
        // Subscribed first, dumped second: a connection opened in between is in both, and the
        // recorder counts it once (by conntrack id).
        let generation = recorder.beginDump()
        let existing = try ConntrackTable.dump()
        recorder.applyDump(existing, generation: generation, at: TimeText.now(), repair: false)
        logger.info("conntrack table read: \(existing.count) existing connections")
        let packetLog = startPacketLog(recorder: recorder)
        let learner = startNameLearner(names)
        let tableGuard = TableGuard(
            backend: backend, installed: backend.installed!,
            restore: { reason in
                let answer = runner.handle(Engine.Request(.tampered(reason)))
                if !answer.ok { throw AgentError.invalidState(answer.message) }
            },
            record: { [self] action, reason, outcome in
                try? store.record(action: action, operator: Engine.agentOperator, reason: reason, policy: "guard", backend: backend.name,
                                  whitelist: management().whitelist, outcome: outcome)
            },
            logger: logger)

        if let fleet = config.fleet {
            let receiveBuffer = capture.receiveBuffer
            let fleetLink = try FleetLink(settings: fleet, store: store, runner: runner, whitelist: serverWhitelist, logger: logger) { [self] in
                let report = status(recorder: recorder, store: store, backend: backend, runner: runner, receiveBuffer: receiveBuffer)
                var status = AgentStatus(mode: report.mode, isolated: report.isolated, rulesetVersion: report.ruleset?.version,
                                         rulesetDigest: report.ruleset?.digest, lostEvents: report.lostEvents,
                                         guardRestores: tableGuard.restores.load(ordering: .relaxed),
                                         guardEscalations: tableGuard.escalations.load(ordering: .relaxed), flows: report.flows,
                                         agentVersion: AgentVersion.current, addresses: FleetLink.addresses(), management: management().whitelist)
                let history = tableGuard.restoreHistory()
                status.lastGuardRestore = history.last.map(TimeText.rfc3339)
                status.recentGuardRestores = history.recent
                return status
            }
            link.set(fleetLink)
            fleetLink.start()
            logger.info("reporting to \(fleet.server.absoluteString); its address is part of the management channel")
        }
        // What `cordon status` answers; the metrics mirror the same numbers.
        let fullStatus: @Sendable () -> StatusReport = { [self] in
            var report = status(recorder: recorder, store: store, backend: backend, runner: runner, receiveBuffer: capture.receiveBuffer)
            report.degraded = tableGuard.degraded.load(ordering: .relaxed)
            report.guardRestores = tableGuard.restores.load(ordering: .relaxed)
            report.guardEscalations = tableGuard.escalations.load(ordering: .relaxed)
            report.unrecorded = runner.unrecorded
            report.releasing = runner.snapshot.isolation.releasing != nil
            report.fleet = link.current?.status
            report.names = names.counters
            report.names?.hold = holder?.counters
            return report
        }
        control.serve { [self] request in
            func answer(_ value: some Encodable) -> Data { (try? JSONEncoder().encode(value)) ?? Data() }
            // The server is the source of truth for a managed host's mode and policy: a local
            // change would be undone by nothing and shown as drift, so it needs saying twice.
            let managed = request.overrideServer ? nil : link.current?.managedBy
            switch request.command {
            case .status:
                return answer(fullStatus())
            case .enforce, .discover:
                if let managed { return answer(ControlAnswer(ok: false, message: managed + "; nothing changed", error: "managed_by_server")) }
            default: break
            }
            let by = { (name: String) in request.overrideServer ? "\(name) (overriding cordon-server)" : name }
            switch request.command {
            case .status:
                return answer(fullStatus())
            case .enforce(let name, let window):
                let name = by(name)
                let latest: Int64?
                do { latest = try store.latestRuleset()?.version } catch {
                    return answer(ControlAnswer(ok: false, message: "cannot read the approved rulesets: \(error)"))
                }
                return answer(runner.handle(Engine.Request(.enforce(approved: latest, confirmWithin: window), operator: name)))
            case .confirm(let name):
                return answer(runner.handle(Engine.Request(.confirm, operator: name)))
            case .discover(let name, let reason):
                return answer(runner.handle(Engine.Request(.discover(reason: reason), operator: by(name))))
            case .isolate(let name, let reason):
                return answer(Emergency.isolate(runner: runner, store: store, operator: name, reason: reason, via: "through the agent"))
            case .release(let name, let reason):
                return answer(Emergency.release(runner: runner, store: store, operator: name, reason: reason))
            }
        }
        logger.info("listening on \(config.socket); flushing every \(config.flushInterval) s")
        tableGuard.start()
        // A failure to listen is logged and the agent runs on: monitoring never stops enforcement.
        let endpoint = config.metrics.map { address in
            MetricsServer(at: address, refresh: { [metrics] in metrics.update(fullStatus(), state: runner.snapshot) }, logger: logger)
        }
        var announced = Self.serviceStatus(runner.snapshot, degraded: tableGuard.degraded.load(ordering: .relaxed))
        notifier.ready(status: announced)
        let watchdogInterval = notifier.watchdogInterval
        var lastWatchdog = Self.monotonic()
        if let watchdogInterval { logger.info("feeding the service manager's watchdog every \(watchdogInterval) s") }

        // Wakes a few times a second for the confirmation deadline; flushes on its own schedule.
        let tick = min(0.25, config.flushInterval)
        var nextFlush = Self.monotonic() + config.flushInterval
        while true {
            let wait = max(0.001, min(tick, nextFlush - Self.monotonic()))
            var timeout = timespec(tv_sec: Int(wait), tv_nsec: Int((wait - Double(Int(wait))) * 1e9))
            let signal = sigtimedwait(&signals, nil, &timeout)
            if signal == SIGTERM || signal == SIGINT {
                logger.notice("signal \(signal): flushing and stopping")
                break
            }
            if signal == SIGHUP { collectorNames.wake() }
            if signal == SIGHUP || Self.monotonic() >= nextFlush {
                flush(recorder, names: names, to: store)
                nextFlush = Self.monotonic() + config.flushInterval
            }
            runner.tick()
            link.current?.tick()
            // Fed here and only here: a main loop stuck in a flush or a transition stops feeding it,
            // and systemd restarts the agent (the rules stay in the kernel meanwhile).
            if let watchdogInterval, Self.monotonic() - lastWatchdog >= watchdogInterval {
                notifier.watchdog()
                lastWatchdog = Self.monotonic()
            }
            let now = Self.serviceStatus(runner.snapshot, degraded: tableGuard.degraded.load(ordering: .relaxed))
            if now != announced {
                notifier.status(now)
                announced = now
            }
        }
        notifier.stopping(status: "stopping: flushing")
        endpoint?.stop()
        // Let the event thread read what the kernel already queued, so that the last flush holds
        // every connection reported before the signal.
        stopping.store(true, ordering: .relaxed)
        capture.waker.wake()
        if capture.done.wait(timeout: .now() + 2) == .timedOut { logger.warning("event thread did not finish; flushing what it read") }
        packetLog?.close()
        learner?.stop()
        holder?.stop()
        resync.finish(timeout: 5)
        flush(recorder, names: names, to: store)
        do {
            try store.setState(Self.liveConnectionsState, recorder.liveConnectionIDs().map(String.init).joined(separator: ","))
        } catch {
            logger.error("could not save live connection ids (a restart will count them again): \(error)")
        }
        control.remove()
        link.current?.stop()
        collectorNames.stop()
        runner.stop()
        logger.notice("stopped: \(recorder.flowCount) flow aggregates stored")
    }

    private static func monotonic() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// The one line `systemctl status` shows: mode and isolation, which an operator needs first,
    /// and loudly when the guard cannot make the kernel hold what the agent installed.
    static func serviceStatus(_ state: HostState, degraded: Bool) -> String {
        let e = state.enforcement
        var text: String
        switch e.mode {
        case .discovery: text = "discovery (nothing blocked)"
        case .enforce:
            text = "enforcing ruleset \(e.version.map(String.init) ?? "?")"
            if e.unconfirmed, let deadline = e.confirmDeadline { text += ", unconfirmed: rolls back at \(TimeText.rfc3339(deadline))" }
        }
        if state.required.overlay { text = "ISOLATED; " + text }
        if degraded { text = "DEGRADED: the kernel does not hold the tables the agent installed; " + text }
        return text
    }

    private func status(recorder: FlowRecorder, store: FlowStore, backend: NftablesBackend, runner: TransitionRunner,
                        receiveBuffer: Int) -> StatusReport {
        let counters = recorder.counters
        let last = lastFlush.load(ordering: .relaxed)
        let state = runner.snapshot
        let enforcement = state.enforcement
        func summary(_ version: RulesetVersion?) -> StatusReport.ApprovedRuleset? {
            version.map {
                StatusReport.ApprovedRuleset(version: $0.version, digest: $0.digest, approvedAt: TimeText.rfc3339($0.approvedAt), operator: $0.operator)
            }
        }
        let inForce = enforcement.mode == .enforce ? enforcement.version.flatMap { try? store.ruleset(version: $0) } : nil
        return StatusReport(
            mode: enforcement.mode.rawValue, isolated: state.required.overlay, flows: recorder.flowCount, events: counters.events,
            lostEvents: counters.lostEvents, resyncs: counters.resyncs,
            recoveredConnections: counters.recoveredConnections, ignoredEvents: counters.ignoredEvents,
            flushErrors: flushErrors.load(ordering: .relaxed), lastFlush: last == 0 ? nil : TimeText.rfc3339(last),
            database: config.database, backend: backend.name, pid: getpid(),
            startedAt: TimeText.rfc3339(startedAt), receiveBufferBytes: receiveBuffer,
            ruleset: summary(inForce), approved: summary((try? store.latestRuleset()).flatMap { $0 }),
            confirmDeadline: enforcement.confirmDeadline.map(TimeText.rfc3339),
            management: management().summary,
            rejectedInbound: counters.rejectedInbound, rejectedOutbound: counters.rejectedOutbound,
            lostLogMessages: counters.lostLogMessages)
    }

    /// Reads the packets the enforcement table refuses and records them as rejected flows. Without
    /// it enforcement still works; only the red flows are missing, which the log says.
    private func startPacketLog(recorder: FlowRecorder) -> PacketLog? {
        let packetLog: PacketLog
        do {
            packetLog = try PacketLog(group: config.logGroup)
        } catch {
            logger.warning("rejected flows will not be recorded: \(error)")
            return nil
        }
        Thread.detachNewThread { [self] in
            while !stopping.load(ordering: .relaxed) {
                do {
                    let outcome = try packetLog.next { packet in
                        let inbound = packet.prefix == CordonTables.inboundLogPrefix
                        guard inbound || packet.prefix == CordonTables.outboundLogPrefix else { return }
                        recorder.recordRejected(packet.header, inbound: inbound, at: TimeText.now())
                    }
                    if outcome == .overrun { recorder.noteLostLogMessages() }
                } catch PacketLogError.closed {
                    return
                } catch {
                    logger.error("packet log: \(error); retrying")
                    sleep(1)
                }
            }
        }
        return packetLog
    }

    /// A restart replaces the table, which empties its name sets: the addresses learned since the
    /// last flush are in them but not yet in the database. Read back, they go into the first table
    /// again (for the same ruleset version only).
    private func carryOverNameSets(backend: NftablesBackend, store: FlowStore, names: NameBook) {
        guard let state = try? store.hostState(), state.enforcement.mode == .enforce, let version = state.enforcement.version else { return }
        do {
            let now = TimeText.now()
            var sets: [String: [(address: IPAddress, expires: Int64)]] = [:]
            for (name, elements) in try backend.nameSetElements(table: CordonTables.baseName) {
                sets[name] = elements.compactMap { element in
                    IPAddress(bytes: element.key[...]).map { ($0, now + Int64(element.expiresIn / 1000)) }
                }
            }
            if !sets.isEmpty {
                names.carry(version: version, sets: sets)
                logger.info("carried over \(sets.values.map(\.count).reduce(0, +)) addresses of name sets from the kernel")
            }
        } catch {
            logger.warning("could not read the name sets back (addresses learned in the last seconds may need a new lookup): \(error)")
        }
    }

    /// Learns names from the resolvers' answers. Without it everything else works; flows carry
    /// no names, which the log says.
    private func startNameLearner(_ book: NameBook) -> NameLearner? {
        let group = CordonTables.NameCapture.group(after: config.logGroup)
        do {
            return try NameLearner(group: group, book: book, logger: logger)
        } catch {
            logger.warning("names will not be learned from DNS answers: \(error)")
            return nil
        }
    }

    private func flush(_ recorder: FlowRecorder, names: NameBook, to store: FlowStore) {
        // Names after flows: a connection recorded in this flush finds the answer read before it.
        let changes = recorder.takeChanges()
        let attributed = names.attribute(recorder.takeOpened())
        let learned = names.takeChanges()
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try store.write(changes, names: attributed, learned: learned)
            metrics.flushed(in: clock.now - started)
            lastFlush.store(TimeText.now(), ordering: .relaxed)
        } catch {
            recorder.restore(changes)
            names.restore(learned)
            flushErrors.add(1, ordering: .relaxed)
            logger.error("flush failed, will retry: \(error)")
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
                    logger.error("conntrack events: \(error); retrying")
                    sleep(1)
                }
            }
            // Stopping: take what is already queued, without waiting for more; an overrun here
            // still needs its re-read, or the connections it lost are never counted.
            drain: while true {
                switch (try? subscription.next(wait: false) { recorder.handle($0, at: TimeText.now()) }) ?? .idle {
                case .events: continue
                case .overrun:
                    recorder.noteLostEvents()
                    resync.request()
                default: break drain
                }
            }
        }
        semaphore.wait()
        return try ready.withLock { $0! }.get()
    }
}

/// Re-reads the conntrack table after lost events, off the event thread so reading events goes on
/// meanwhile. Requests that arrive during a re-read are folded into one more re-read.
final class ResyncWorker: Sendable {
    private let pending = Atomic<Bool>(false)
    private let running = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)

    init(recorder: FlowRecorder, logger: Logger) {
        Thread.detachNewThread { [self] in
            while true {
                wake.wait()
                running.store(true, ordering: .sequentiallyConsistent)
                defer { running.store(false, ordering: .sequentiallyConsistent) }
                guard pending.exchange(false, ordering: .acquiringAndReleasing) else { continue }
                let generation = recorder.beginDump()
                do {
                    let entries = try ConntrackTable.dump()
                    recorder.applyDump(entries, generation: generation, at: TimeText.now(), repair: true)
                } catch {
                    recorder.applyDump([], generation: 0, at: TimeText.now(), repair: true)
                    logger.error("re-reading the conntrack table failed: \(error)")
                }
            }
        }
    }

    func request() {
        if !pending.exchange(true, ordering: .acquiringAndReleasing) { wake.signal() }
    }

    /// At shutdown: lets a requested or running re-read finish, so that the last flush holds
    /// the connections it recovers (up to `timeout` seconds).
    func finish(timeout: Double) {
        let deadline = DispatchTime.now() + timeout
        while (pending.load(ordering: .sequentiallyConsistent) || running.load(ordering: .sequentiallyConsistent))
            && DispatchTime.now() < deadline {
            usleep(10_000)
        }
    }
}

/// The fleet link, once there is one: the runner's checks are built before it.
final class FleetLinkSlot: Sendable {
    private let link = Mutex<FleetLink?>(nil)
    var current: FleetLink? { link.withLock { $0 } }
    func set(_ value: FleetLink) { link.withLock { $0 = value } }
}

/// The networks with name sets in the table in force, for the holder: read from the runner's
/// state and the approved ruleset of its version, parsed once per version.
final class NamedNetworksInForce: Sendable {
    private let store: FlowStore
    private let slot = Mutex<(runner: TransitionRunner?, version: Int64?, networks: [(number: Int, network: ExternalNetwork)])>((nil, nil, []))

    init(store: FlowStore) { self.store = store }

    var runner: TransitionRunner? {
        get { slot.withLock { $0.runner } }
        set { slot.withLock { $0.runner = newValue } }
    }

    var networks: [(number: Int, network: ExternalNetwork)] {
        guard let runner else { return [] }
        let enforcement = runner.snapshot.enforcement
        guard enforcement.mode == .enforce, let version = enforcement.version else { return [] }
        if let cached = slot.withLock({ $0.version == version ? $0.networks : nil }) { return cached }
        guard let approved = try? store.approvedRuleset(version: version),
              let ruleset = try? RulesetParser.parse(approved.content, file: "approved ruleset version \(version)") else { return [] }
        let networks = CordonTables.nameSetNetworks(ruleset)
        slot.withLock { $0.version = version; $0.networks = networks }
        return networks
    }
}
