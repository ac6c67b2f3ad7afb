#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import CordonFleetClient
import CordonStore
import CordonWire
import Foundation
import Logging
import Synchronization

/// `cordon agent --server`: where the fleet's server is and how to join it.
public struct FleetSettings: Sendable, Equatable {
    public var server: URL
    public var caPEM: String
    /// Needed for the first start only: afterwards the host's own credential is in the database.
    public var enrollSecret: String?
    public var tags: [String: String]

    public init(server: URL, caPEM: String, enrollSecret: String?, tags: [String: String]) {
        self.server = server
        self.caPEM = caPEM
        self.enrollSecret = enrollSecret
        self.tags = tags
    }

    /// The server as collectors of the management channel: isolation and enforcement keep it open.
    public func endpoints() -> [ManagementChannel.Endpoint] {
        guard let host = server.host else { return [] }
        let port = UInt16(server.port ?? 443)
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        if let address = IPAddress(bare) { return [ManagementChannel.Endpoint(transport: IPProtocolNumber.tcp, addresses: IPPrefix(address), port: port)] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(bare, nil, &hints, &result) == 0 else { return [] }
        defer { freeaddrinfo(result) }
        var endpoints: [ManagementChannel.Endpoint] = []
        var node = result
        while let info = node?.pointee {
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if info.ai_family == AF_INET {
                info.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { var a = $0.pointee.sin_addr; _ = inet_ntop(AF_INET, &a, &text, socklen_t(text.count)) }
            } else if info.ai_family == AF_INET6 {
                info.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { var a = $0.pointee.sin6_addr; _ = inet_ntop(AF_INET6, &a, &text, socklen_t(text.count)) }
            }
            if let address = IPAddress(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) {
                let endpoint = ManagementChannel.Endpoint(transport: IPProtocolNumber.tcp, addresses: IPPrefix(address), port: port)
                if !endpoints.contains(endpoint) { endpoints.append(endpoint) }
            }
            node = info.ai_next
        }
        return endpoints
    }
}

/// The fleet's part of `cordon status`.
public struct FleetStatus: Codable, Sendable, Equatable {
    public var server: String
    public var hostID: String?
    /// The last call to the server succeeded.
    public var connected: Bool
    public var revoked: Bool
    public var lastContact: String?
    public var lastError: String?
    public var appliedGeneration: Int64
    /// Decision-log entries the server has not acknowledged yet.
    public var unsentLogEntries: Int

    enum CodingKeys: String, CodingKey {
        case server, hostID = "host_id", connected, revoked, lastContact = "last_contact", lastError = "last_error"
        case appliedGeneration = "applied_generation", unsentLogEntries = "unsent_log_entries"
    }
}

/// The agent's channel to `cordon-server`. The SQLite file is the outbox: what the server has
/// acknowledged is recorded there (decision-log sequence, flow change number), so a crash of
/// either end resends from the last acknowledgement and the server stores each thing once.
///
/// Three activities: a long poll on which the server pushes the host's desired-state document;
/// reports (status, observations, the log, changed flows), sent at once after a change and every
/// few seconds otherwise; and one thread that carries out the plan `FleetReconciler` makes of a
/// new document, through the runner, the same path as every other transition. Every decision is
/// the reconciler's; this type does the I/O. Failures back off with jitter, up to 30 s.
public final class FleetLink: Sendable {
    static let enrollmentState = "fleet_enrollment"
    static let appliedState = "fleet_applied_generation"
    static let reportedState = "fleet_reported_isolation"
    static let logAckedState = "fleet_log_acked"
    static let flowsAckedState = "fleet_flows_acked"
    static let revokedState = "fleet_revoked"
    /// The mode the server's newest document sets (JSON of `ModeIntent`; empty: none), kept so a
    /// restarted agent refuses local mode changes before the server answers.
    public static let managedState = "fleet_managed_mode"
    /// The mode intent carried out last (`FleetReconciler.plan`'s `modeDone`).
    static let modeDoneState = "fleet_mode_done"
    static let reportInterval: Double = 5
    static let logBatch = 200
    static let flowBatch = 2000

    struct Enrollment: Codable, Sendable {
        var server: String
        var hostID: String
        var credential: String
        enum CodingKeys: String, CodingKey { case server, hostID = "host_id", credential }
    }

    private struct State: Sendable {
        var enrollment: Enrollment?
        var applied: Int64 = 0
        /// The isolation the server knows of (reported, or set by its own intent).
        var reported: IsolationWord?
        var logAcked: Int64 = 0
        var flowsAcked: Int64 = 0
        var latest: DesiredState?
        var result: AppliedGeneration?
        var applying = false
        /// Counts the starts and ends of applies: a report whose snapshot predates one of them
        /// must not read the difference as a local change.
        var applyEpoch = 0
        var connected = false
        var revoked = false
        var lastContact: Int64?
        var lastError: String?
        var lastSnapshot: HostState?
        var stopped = false
        /// The extra whitelist of the newest document seen (by poll or report), and its generation:
        /// taken whatever the generation's isolation, so a host enrolled with one has it at once.
        var wantedWhitelist: [String]?
        var whitelistGeneration: Int64 = -1
        /// The server answered 404 to `/agent/v1/state`: a server before 0.3.0.
        var legacyServer = false
        /// The mode the newest document sets; nil while the server leaves the mode to the host.
        var managed: ModeIntent?
        var managedGeneration: Int64 = -1
        var modeDone: String?
    }

    public let settings: FleetSettings
    private let store: FlowStore
    private let runner: TransitionRunner
    private let whitelist: ServerWhitelist
    private let agentStatus: @Sendable () -> AgentStatus
    private let logger: Logger
    private let state: Mutex<State>
    private let applyWake = DispatchSemaphore(value: 0)
    private let kick: AsyncStream<Void>.Continuation
    private let kicks: AsyncStream<Void>
    private let tasks = Mutex<[Task<Void, Never>]>([])

    public init(settings: FleetSettings, store: FlowStore, runner: TransitionRunner, whitelist: ServerWhitelist, logger: Logger,
                status: @escaping @Sendable () -> AgentStatus) throws {
        self.settings = settings
        self.store = store
        self.runner = runner
        self.whitelist = whitelist
        self.logger = logger
        agentStatus = status
        var initial = State()
        if let text = try store.state(Self.enrollmentState), let saved = try? Wire.decode(Enrollment.self, from: Data(text.utf8)),
           saved.server == settings.server.absoluteString {
            initial.enrollment = saved
            initial.applied = Int64(try store.state(Self.appliedState) ?? "") ?? 0
            initial.reported = (try store.state(Self.reportedState)).flatMap(IsolationWord.init)
            initial.logAcked = Int64(try store.state(Self.logAckedState) ?? "") ?? 0
            initial.flowsAcked = Int64(try store.state(Self.flowsAckedState) ?? "") ?? 0
            initial.revoked = try store.state(Self.revokedState) == "1"
            initial.managed = (try store.state(Self.managedState)).flatMap { try? Wire.decode(ModeIntent.self, from: Data($0.utf8)) }
            initial.modeDone = try store.state(Self.modeDoneState).flatMap { $0.isEmpty ? nil : $0 }
        } else if settings.enrollSecret == nil {
            throw AgentError.invalidState("not enrolled with \(settings.server.absoluteString): give --enroll-secret-file for the first start")
        }
        state = Mutex(initial)
        (kicks, kick) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var status: FleetStatus {
        let s = state.withLock { $0 }
        let unsent = (try? store.decisionCount(after: s.logAcked)) ?? 0
        return FleetStatus(server: settings.server.absoluteString, hostID: s.enrollment?.hostID, connected: s.connected, revoked: s.revoked,
                           lastContact: s.lastContact.map(TimeText.rfc3339), lastError: s.lastError, appliedGeneration: s.applied,
                           unsentLogEntries: unsent)
    }

    /// Why a local `enforce` or `discover` is refused: the server sets this host's mode (a
    /// rollout reached it); nil while it leaves the mode to the host.
    public var managedBy: String? {
        guard let mode = state.withLock({ $0.revoked ? nil : $0.managed }) else { return nil }
        return "this host's mode and policy come from cordon-server \(settings.server.absoluteString) (its document asks \(mode.mode.rawValue)"
            + (mode.intentID.map { ", intent \($0)" } ?? "") + "): change them there (`cordon fleet rollout`, `cordon fleet discover`), "
            + "or pass --override-server to change them here anyway (shown on the server as drift); `cordon isolate` always works"
    }

    public func start() {
        guard !state.withLock({ $0.revoked }) else {
            logger.critical("this host's credential was revoked by \(settings.server.absoluteString): not connecting")
            return
        }
        Thread.detachNewThread { [self] in applyLoop() }
        let main = Task { [self] in await run() }
        let timer = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(Self.reportInterval))
                kick.yield()
            }
        }
        tasks.withLock { $0 = [main, timer] }
    }

    public func stop() {
        state.withLock { $0.stopped = true }
        for task in tasks.withLock({ $0 }) { task.cancel() }
        kick.finish()
        applyWake.signal()
    }

    /// From the agent's main loop: a transition since the last look (a local isolation, an
    /// enforcement, a restore) is reported at once.
    public func tick() {
        let snapshot = runner.snapshot
        let changed = state.withLock { s -> Bool in
            defer { s.lastSnapshot = snapshot }
            return s.lastSnapshot != nil && s.lastSnapshot != snapshot
        }
        if changed { kick.yield() }
    }

    /// After a release (and an enforce): an authenticated round trip to the server over a new
    /// connection, through the rules now in force. nil when it answered; blocks the calling
    /// thread, which is never one of Swift's concurrency pool (the runner's callers are threads).
    public func healthCheck(timeout: Double) -> String? {
        guard let enrollment = state.withLock({ $0.enrollment }) else { return nil }
        let result = Mutex<String?>("no answer")
        let done = DispatchSemaphore(value: 0)
        let applied = state.withLock { $0.applied }
        Task { [settings] in
            defer { done.signal() }
            do {
                let client = try FleetClient(server: settings.server, caPEM: settings.caPEM, credential: enrollment.credential, connectTimeout: timeout)
                defer { Task { await client.shutdown() } }
                _ = try await Self.fetch(client, after: applied, wait: 0, timeout: timeout, legacy: false)
                result.withLock { $0 = nil }
            } catch {
                result.withLock { $0 = "server \(settings.server.absoluteString) did not answer an authenticated request: \(error)" }
            }
        }
        if done.wait(timeout: .now() + timeout + 1) == .timedOut { return "server \(settings.server.absoluteString): no answer within \(timeout) s" }
        return result.withLock { $0 }
    }

    // MARK: The channel

    private func run() async {
        var delay = 0.5
        while !Task.isCancelled {
            if state.withLock({ $0.enrollment }) != nil { break }
            do {
                try await enroll()
            } catch {
                note(error)
                if case .refused(let status, _)? = error as? FleetError, status == 403 {
                    logger.critical("enrollment refused by \(settings.server.absoluteString): \(error); not retrying")
                    return
                }
                await backoff(&delay)
            }
        }
        guard let enrollment = state.withLock({ $0.enrollment }),
              let client = try? FleetClient(server: settings.server, caPEM: settings.caPEM, credential: enrollment.credential) else { return }
        logger.notice("connected to the fleet as host \(enrollment.hostID) at \(settings.server.absoluteString)")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in await pollLoop(client) }
            group.addTask { [self] in await reportLoop(client) }
        }
        await client.shutdown()
    }

    private func enroll() async throws {
        let client = try FleetClient(server: settings.server, caPEM: settings.caPEM, credential: nil)
        defer { Task { await client.shutdown() } }
        var hostname = [CChar](repeating: 0, count: 256)
        gethostname(&hostname, hostname.count)
        let machineID = ((try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let request = EnrollRequest(secret: settings.enrollSecret ?? "", hostname: String(decoding: hostname.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), machineID: machineID,
                                    addresses: Self.addresses(), agentVersion: AgentVersion.current, tags: settings.tags)
        let answer = try await client.call(.POST, "/agent/v1/enroll", body: request, timeout: 15, as: EnrollResponse.self)
        let saved = Enrollment(server: settings.server.absoluteString, hostID: answer.hostID, credential: answer.credential)
        // A new enrollment starts the server's record afresh: everything is sent from the start.
        // Another server's whitelist is not this one's: it goes until this server's first document.
        try store.setStates([(Self.enrollmentState, String(decoding: Wire.encode(saved), as: UTF8.self)), (Self.appliedState, "0"),
                             (Self.logAckedState, "0"), (Self.flowsAckedState, "0"), (Self.revokedState, "0"), (ServerWhitelist.state, "[]"),
                             (Self.managedState, ""), (Self.modeDoneState, "")])
        _ = whitelist.set([])
        state.withLock {
            $0.enrollment = saved
            $0.applied = 0
            $0.logAcked = 0
            $0.flowsAcked = 0
            $0.reported = nil
            $0.managed = nil
            $0.managedGeneration = -1
            $0.modeDone = nil
        }
        logger.notice("enrolled with \(settings.server.absoluteString) as host \(answer.hostID)")
    }

    static func addresses() -> [String] {
        HostAddresses.read().unicast.map(\.description).filter { !$0.hasPrefix("127.") && $0 != "::1" && !$0.hasPrefix("fe80:") }.sorted()
    }

    private func pollLoop(_ client: FleetClient) async {
        var delay = 0.5
        while !Task.isCancelled && !isStopped {
            let after = state.withLock { $0.applied }
            do {
                let legacy = state.withLock { $0.legacyServer }
                let desired: DesiredState
                do {
                    desired = try await Self.fetch(client, after: after, wait: 25, timeout: 40, legacy: legacy)
                } catch FleetError.refused(404, _) where !legacy {
                    logger.warning("fleet: \(settings.server.absoluteString) has no /agent/v1/state (a server before 0.3.0): polling /agent/v1/desired")
                    state.withLock { $0.legacyServer = true }
                    continue
                }
                contact()
                offer(desired)
                delay = 0.5
            } catch {
                note(error)
                if isStopped { return }
                await backoff(&delay)
            }
        }
    }

    /// The document by long poll; from a server before 0.3.0 (`legacy`, or a 404 for the health
    /// check), the isolation it serves on `/agent/v1/desired`, read as a document.
    static func fetch(_ client: FleetClient, after: Int64, wait: Int, timeout: Double, legacy: Bool) async throws(FleetError) -> DesiredState {
        if !legacy {
            do {
                return try await client.call(.GET, "/agent/v1/state?after=\(after)&wait=\(wait)", timeout: timeout, as: DesiredState.self)
            } catch .refused(404, let error) where wait > 0 {
                throw .refused(status: 404, error)
            } catch .refused(404, _) {
                // A health check against an older server: its legacy route answers as well.
            }
        }
        return DesiredState(legacy: try await client.call(.GET, "/agent/v1/desired?after=\(after)&wait=\(wait)", timeout: timeout,
                                                          as: DesiredIsolation.self))
    }

    private func reportLoop(_ client: FleetClient) async {
        var delay = 0.5
        kick.yield()
        for await _ in kicks {
            if isStopped { return }
            do {
                while try await reportOnce(client) {}
                contact()
                delay = 0.5
            } catch {
                note(error)
                if isStopped { return }
                await backoff(&delay)
                kick.yield()
            }
        }
    }

    /// One report; true when more is waiting to be sent.
    private func reportOnce(_ client: FleetClient) async throws -> Bool {
        let (logAcked, flowsAcked) = state.withLock { ($0.logAcked, $0.flowsAcked) }
        let entries = try store.decisions(after: logAcked, limit: Self.logBatch)
        let flows = try store.flowsChanged(after: flowsAcked, limit: Self.flowBatch)
        let epoch = state.withLock { $0.applyEpoch }
        let snapshot = runner.snapshot
        // Read after the snapshot, so it is at least the entry of the change the snapshot shows.
        // The server knows a change by this and its state together: a pair from a race (a newer
        // entry beside the older state) costs one more intent at most, never a change taken for
        // a repeat and dropped.
        let localSequence = try store.latestIsolationSequence()
        let observed: IsolationWord = snapshot.isolation.isolated ? .isolated : .released
        let (applied, result, local, settled) = state.withLock { s -> (Int64, AppliedGeneration?, LocalIsolationChange?, Bool) in
            let quiet = !s.applying && s.applyEpoch == epoch
            // Before the first report the server knows the host as released (an isolation from
            // before the enrollment is reported like any other local one).
            let local = FleetReconciler.localChange(host: snapshot, known: s.reported, settled: quiet, sequence: localSequence, now: TimeText.now())
            return (s.applied, s.result, local, quiet && (s.latest?.generation ?? 0) <= s.applied)
        }
        let report = AgentReport(status: agentStatus(), observed: observed, appliedGeneration: applied, applied: result, local: local,
                                 log: entries, flows: flows.map(\.record), settled: settled, flowsAfter: flowsAcked,
                                 flowsThrough: flows.last?.sequence ?? flowsAcked)
        let answer = try await client.call(.POST, "/agent/v1/report", body: report, timeout: 20, as: ReportResponse.self)
        let flowsCursor = flows.last?.sequence ?? flowsAcked
        state.withLock { s in
            // The server's heads, even if lower (its database restored from a backup): it gets
            // the rest again. Never past what this store sent: a server head above it cannot
            // stand for rows this store holds.
            s.logAcked = answer.logAckedThrough
            s.flowsAcked = min(answer.flowsAckedThrough ?? flowsCursor, flowsCursor)
            if s.result == result { s.result = nil }
            let settled = !s.applying && s.applyEpoch == epoch
            if settled { s.reported = observed }
            // What the server now wants is what the host already is (a local change it adopted).
            if answer.state.generation > s.applied, settled, FleetReconciler.satisfied(answer.state, host: runner.snapshot, inForceDigest: inForceDigest(),
                                                                                  modeDone: s.modeDone),
               answer.state.isolation.extraWhitelist == whitelist.entries {
                s.applied = answer.state.generation
            }
        }
        let s = state.withLock { $0 }
        try? store.setStates([(Self.logAckedState, String(s.logAcked)), (Self.flowsAckedState, String(s.flowsAcked)),
                              (Self.appliedState, String(s.applied)), (Self.reportedState, (s.reported ?? observed).rawValue)])
        offer(answer.state)
        return entries.count == Self.logBatch || flows.count == Self.flowBatch
    }

    private func offer(_ desired: DesiredState) {
        let managedChanged = state.withLock { s -> Bool in
            guard desired.generation > s.managedGeneration else { return false }
            s.managedGeneration = desired.generation
            defer { s.managed = desired.mode }
            return s.managed != desired.mode
        }
        if managedChanged {
            try? store.setState(Self.managedState, desired.mode.map { String(decoding: Wire.encode($0), as: UTF8.self) } ?? "")
        }
        let wake = state.withLock { s -> Bool in
            var wake = false
            if desired.generation >= s.whitelistGeneration, desired.isolation.extraWhitelist != s.wantedWhitelist {
                s.wantedWhitelist = desired.isolation.extraWhitelist
                s.whitelistGeneration = desired.generation
                wake = true
            }
            if desired.generation > s.applied, desired.generation > (s.latest?.generation ?? -1) {
                s.latest = desired
                wake = true
            }
            return wake
        }
        if wake { applyWake.signal() }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func contact() {
        state.withLock {
            $0.connected = true
            $0.lastContact = TimeText.now()
            $0.lastError = nil
        }
    }

    private func note(_ error: any Error) {
        let text = "\(error)"
        let (changed, revoked) = state.withLock { s -> (Bool, Bool) in
            defer {
                s.connected = false
                s.lastError = text
            }
            if (error as? FleetError)?.isRevoked == true { s.revoked = true }
            return (s.lastError != text, s.revoked)
        }
        if revoked {
            try? store.setState(Self.revokedState, "1")
            logger.critical("this host's credential was revoked by \(settings.server.absoluteString); the agent goes on locally")
            stop()
        } else if changed {
            logger.warning("fleet: \(text); retrying with back-off")
        }
    }

    private func backoff(_ delay: inout Double) async {
        let jittered = delay * Double.random(in: 0.5...1.5)
        try? await Task.sleep(for: .milliseconds(Int(jittered * 1000)))
        delay = min(delay * 2, 30)
    }

    // MARK: Applying

    private func applyLoop() {
        while !isStopped {
            _ = applyWake.wait(timeout: .now() + 1)
            applyWhitelist()
            let next = state.withLock { s -> DesiredState? in
                guard let latest = s.latest, latest.generation > s.applied, !s.stopped else { return nil }
                s.applying = true
                s.applyEpoch += 1
                return latest
            }
            guard let desired = next else { continue }
            let plan = FleetReconciler.plan(desired, host: runner.snapshot, inForceDigest: inForceDigest(), modeDone: state.withLock { $0.modeDone })
            let result = apply(plan, generation: desired.generation)
            let now: IsolationWord = runner.snapshot.isolation.isolated ? .isolated : .released
            // An echo of a local change tells the server nothing new: what it knows stays as it was.
            let echo = plan == .echo
            // The mode intent was carried out (or failed): a later generation does not do it again.
            let modeDone = desired.mode?.intentID
            if let modeDone { try? store.setState(Self.modeDoneState, modeDone) }
            state.withLock { s in
                s.applied = max(s.applied, desired.generation)
                s.result = result
                if let modeDone { s.modeDone = modeDone }
                if !echo { s.reported = now }
                s.applying = false
                s.applyEpoch += 1
            }
            try? store.setStates([(Self.appliedState, String(desired.generation))] + (echo ? [] : [(Self.reportedState, now.rawValue)]))
            // The isolation entry goes to the server as the isolation is applied.
            kick.yield()
        }
    }

    /// The newest document's extra whitelist, in use from now on: recorded, and the management
    /// channel installed again where it is in the kernel. When that fails, the old whitelist
    /// stays recorded, so the next turn of the loop tries again.
    private func applyWhitelist() {
        guard let wanted = state.withLock({ $0.wantedWhitelist }), wanted != whitelist.entries else { return }
        let old = whitelist.entries
        _ = whitelist.set(wanted)
        for problem in FleetReconciler.whitelist(wanted).invalid { logger.error("the server's extra whitelist: \(problem); entry ignored") }
        if let request = FleetReconciler.reinstall(host: runner.snapshot) {
            let answer = runner.handle(request)
            guard answer.ok else {
                _ = whitelist.set(old)
                logger.error("the server's extra whitelist could not be installed (\(answer.message)); the channel in force keeps the old one; retrying")
                return
            }
        }
        try? store.setState(ServerWhitelist.state, String(decoding: Wire.encode(wanted), as: UTF8.self))
        logger.notice("the server's extra whitelist: \(wanted.isEmpty ? "none" : wanted.joined(separator: " "))")
    }

    /// The digest of the ruleset version in the kernel; nil in discovery.
    private func inForceDigest() -> String? {
        let e = runner.snapshot.enforcement
        guard e.mode == .enforce, let version = e.version else { return nil }
        return (try? store.ruleset(version: version))?.digest
    }

    /// Carries out one generation's plan; the first step that fails ends it.
    private func apply(_ plan: FleetReconciler.Plan, generation: Int64) -> AppliedGeneration {
        switch plan {
        case .inSync, .echo:
            return AppliedGeneration(generation: generation, ok: true, error: nil)
        case .refuse(let why):
            logger.error("fleet generation \(generation) not applied: \(why)")
            return AppliedGeneration(generation: generation, ok: false, error: why)
        case .apply(let steps):
            for step in steps {
                let before = try? store.latestDecisionSequence()
                let answer = perform(step)
                logger.notice("fleet generation \(generation): \(answer.message)")
                guard answer.ok else {
                    // Known by the log's own entry, not by the answer's words.
                    let rolledBack = before.map { sequence in ((try? store.decisions(after: sequence, limit: 100)) ?? []).contains { $0.action == "rollback" } }
                    return AppliedGeneration(generation: generation, ok: false, error: answer.message, rolledBack: rolledBack ?? false)
                }
            }
            return AppliedGeneration(generation: generation, ok: true, error: nil)
        }
    }

    private func perform(_ step: FleetReconciler.Step) -> Answer {
        switch step {
        case .request(let request):
            return Emergency.perform(request, runner: runner, store: store)
        case .enforce(let policy, let window, let name, let reason):
            // What the server sends is checked as a file on the host would be, before it is kept.
            guard ContentDigest.hex(policy.content) == policy.digest else {
                return Answer(ok: false, message: "the server's policy does not match its digest \(policy.digest.prefix(12)); not kept, nothing changed")
            }
            do { _ = try RulesetParser.parse(policy.content, file: "the server's policy \(policy.digest.prefix(12))") } catch {
                return Answer(ok: false, message: "the server's policy does not read: \(error); nothing changed")
            }
            let version: Int64
            do {
                if let kept = try store.rulesetVersions().last(where: { $0.digest == policy.digest }) {
                    version = kept.version
                } else {
                    version = try store.approve(content: policy.content, source: "cordon-server", operator: name, acceptedRisks: [], reason: reason).version
                }
            } catch {
                return Answer(ok: false, message: "the server's policy could not be kept (\(error)); nothing changed")
            }
            let enforced = runner.handle(Engine.Request(.enforce(approved: version, confirmWithin: window), operator: name))
            guard enforced.ok else { return enforced }
            return confirm(name)
        case .confirm(let name):
            return confirm(name)
        case .fail(let why):
            return Answer(ok: false, message: why)
        }
    }

    /// Confirms only after an authenticated round trip to the server over a new connection,
    /// through the rules now in force. Without it the window runs out and the host rolls back
    /// by itself, which the server's rollout sees and halts on.
    private func confirm(_ name: String) -> Answer {
        if let failure = healthCheck(timeout: 5) {
            return Answer(ok: false, message: "not confirmed: \(failure); the host rolls back when its confirm window ends")
        }
        return runner.handle(Engine.Request(.confirm, operator: name))
    }
}

/// What the server's documents add to the management channel: kept open while isolated,
/// allowed while enforcing, as the agent's own `--extra-allow`. Kept in the database, so a
/// restart installs it before the server answers.
public final class ServerWhitelist: Sendable {
    static let state = "fleet_extra_whitelist"
    private let value = Mutex<[String]>([])

    public init() {}

    public var entries: [String] { value.withLock { $0 } }
    public var endpoints: [ManagementChannel.Endpoint] { FleetReconciler.whitelist(entries).endpoints }

    public func load(from store: FlowStore) {
        let saved = (try? store.state(Self.state)).flatMap { $0 }.flatMap { try? Wire.decode([String].self, from: Data($0.utf8)) } ?? []
        value.withLock { $0 = saved }
    }

    /// True when it changed.
    func set(_ entries: [String]) -> Bool {
        value.withLock { current in
            defer { current = entries }
            return current != entries
        }
    }
}

public enum AgentVersion {
    public static let current = CordonVersion.current
}
