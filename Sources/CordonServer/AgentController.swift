import CordonCore
import CordonWire
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// The agents' side: enrollment, the long poll on which the server pushes the desired state,
/// and the report that carries status, observations, decision-log entries and flows.
struct AgentController {
    /// A poll is answered after this long at most, with the state unchanged: short enough for
    /// idle-connection timeouts of proxies, long enough to cost nothing.
    static let longestPoll: Double = 25
    /// A long poll ends somewhere in its last fifth, at random: agents that polled together (a
    /// server restart, a network blip) would otherwise come back together every 25 s, and each
    /// such wave of 10,000 polls queues for the database and the pool at once.
    static func pollDuration(_ wait: Double) -> Double {
        let duration = min(wait, longestPoll)
        return duration >= 5 ? duration * Double.random(in: 0.8...1.0) : duration
    }
    static let maximumLogEntries = 1000
    /// 9999-12-31T23:59:59Z: PostgreSQL's timestamps end soon after.
    static let latestTime: Int64 = 253_402_300_799
    static let maximumFlows = 5000
    static let reportBody = 16 << 20

    let stores: Stores
    let waiters: DesiredWaiters
    let seen: SeenHosts
    let metrics: ServerMetrics
    let deadline: DatabaseDeadline
    let logger: Logger

    func addRoutes(to router: Router<ServerContext>) {
        router.post("/agent/v1/enroll", use: deadline(enroll))
        router.group("/agent/v1")
            .add(middleware: Authentication(tokens: stores.tokens, accepts: .host, deadline: deadline))
            // The long polls wait by design: their reads are bounded one by one.
            .get("state", use: state)
            .get("desired", use: legacyDesired)
            .post("report", use: deadline(report, body: Self.reportBody))
    }

    @Sendable func enroll(_ request: Request, context: ServerContext) async throws -> Response {
        let enrollment = try await JSON.decode(EnrollRequest.self, from: request)
        do { try Validation.enrollment(enrollment) } catch { throw APIFailure(.unprocessableContent, error.message, field: error.field) }
        guard let answer = try await stores.enrollment.enroll(enrollment) else {
            try await stores.audit.record(actor: "enrollment", role: nil, action: "enroll refused", target: enrollment.hostname,
                                          detail: "unknown, expired, used-up or revoked secret", remote: context.remote)
            throw APIFailure(.forbidden, "the enrollment secret is not valid (unknown, expired, used up or revoked)", field: "secret")
        }
        try await stores.audit.record(actor: "enrollment", role: nil, action: "enroll", target: answer.hostID,
                                      detail: "hostname \(enrollment.hostname), machine id \(enrollment.machineID)", remote: context.remote)
        // A host that joins an assigned tier has that tier's policy waiting for it (`pending`) at once.
        if let id = UUID(uuidString: answer.hostID), try await !stores.policy.assignments().isEmpty {
            try await EffectivePolicies.recompute(stores, only: [id])
        }
        logger.notice("enrolled host \(answer.hostID) (\(enrollment.hostname))")
        return JSON.response(answer, status: .created)
    }

    /// The host's desired-state document, by long poll.
    @Sendable func state(_ request: Request, context: ServerContext) async throws -> Response {
        JSON.response(try await poll(request, context: context))
    }

    /// Agents before 0.3.0 poll here and read the isolation alone.
    @Sendable func legacyDesired(_ request: Request, context: ServerContext) async throws -> Response {
        JSON.response(try await poll(request, context: context).legacy)
    }

    /// Answers at once when the desired generation is past `after`, else when it changes (on any
    /// replica) or after `wait` seconds.
    func poll(_ request: Request, context: ServerContext) async throws -> DesiredState {
        let host = try context.requireHost()
        let query = request.uri.queryParameters
        guard let after = query.get("after").map({ Int64($0) }) ?? 0 else { throw APIFailure(.badRequest, "expected an integer", field: "after") }
        guard let wait = query.get("wait").map({ Double($0) }) ?? 0, (0...Self.longestPoll).contains(wait) else {
            throw APIFailure(.badRequest, "expected seconds from 0 to \(Int(Self.longestPoll))", field: "wait")
        }
        seen.note(host)
        // Registered before the first read: a change committed in between still wakes it. One
        // read per poll, and one more only when woken.
        let first = ReadBox()
        let store = stores.desired
        let deadline = deadline
        let waiters = waiters
        // A graceful shutdown answers every poll at once: the server's shutdown waits for the
        // requests in flight, and 10,000 polls ending by themselves outlast the unit's stop timeout.
        let woken = await withGracefulShutdownHandler {
            await waiters.wait(host: host, timeout: Self.pollDuration(wait)) {
                // A failed read wakes the poll at once, and the poll answers its error.
                do {
                    let read = try await deadline.run { try await store.desired(host: host) }
                    first.value.withLock { $0 = .success(read) }
                    return (read?.generation ?? .max) > after
                } catch {
                    first.value.withLock { $0 = .failure(error) }
                    return true
                }
            }
        } onGracefulShutdown: {
            waiters.close()
        }
        var current: DesiredState?
        switch first.value.withLock({ $0 }) {
        case .failure(let error)?: throw error
        case .success(let read)?:
            current = read
            // Woken without a newer state in hand: read again.
            if woken, let read, read.generation <= after { current = try await deadline.run { try await store.desired(host: host) } }
        case nil:
            // The wait ended before its first read did.
            current = try await deadline.run { try await store.desired(host: host) }
        }
        guard let current else { throw APIFailure.unauthorized }
        seen.note(host)
        return current
    }

    @Sendable func report(_ request: Request, context: ServerContext) async throws -> Response {
        let host = try context.requireHost()
        var report = try await JSON.decode(AgentReport.self, from: request, limit: Self.reportBody)
        guard report.log.count <= Self.maximumLogEntries else {
            throw APIFailure(.contentTooLarge, "at most \(Self.maximumLogEntries) entries per report", field: "log")
        }
        guard report.flows.count <= Self.maximumFlows else {
            throw APIFailure(.contentTooLarge, "at most \(Self.maximumFlows) flows per report", field: "flows")
        }
        do {
            try Validation.status(report.status)
            if let local = report.local { try Validation.local(local) }
        } catch {
            throw APIFailure(.unprocessableContent, error.message, field: error.field)
        }
        if let bad = report.log.first(where: { $0.sequence < 1 }) {
            throw APIFailure(.unprocessableContent, "entry \(bad.sequence): sequences start at 1", field: "log.sequence")
        }
        guard report.appliedGeneration >= 0, (report.applied?.generation ?? 0) >= 0 else {
            throw APIFailure(.unprocessableContent, "generations are not negative", field: "applied_generation")
        }
        for (value, field) in [(report.flowsAfter, "flows_after"), (report.flowsThrough, "flows_through")] where (value ?? 0) < 0 {
            throw APIFailure(.unprocessableContent, "sequences are not negative", field: field)
        }
        report.status.management = report.status.management.map(Validation.readable)
        if let local = report.local, !(0...Self.latestTime).contains(local.at) {
            throw APIFailure(.unprocessableContent, "expected Unix seconds between 1970 and 9999", field: "local.at")
        }
        // The entries first: the isolation entry is on record before the intent reads succeeded.
        metrics.reported(flows: report.flows.count, logEntries: report.log.count)
        // A bad row is refused by itself: the rest of the report (the isolation above all) still counts.
        var flows: [FlowRecord] = [], refused: [RefusedFlow] = []
        let now = TimeText.now()
        for (index, flow) in report.flows.enumerated() {
            do {
                try Validation.flow(flow, now: now)
                flows.append(flow)
            } catch {
                refused.append(RefusedFlow(index: index, field: error.field, message: error.message))
            }
        }
        if !refused.isEmpty { logger.warning("host \(host): \(refused.count) flow rows refused, the first at flows[\(refused[0].index)].\(refused[0].field): \(refused[0].message)") }
        let acked = try await stores.log.append(host: host, entries: report.log)
        try await stores.flows.upsert(host: host, flows: flows)
        var flowHead: Int64?
        // A batch that does not say consistently which rows it carries moves no head; the rows
        // themselves count like any others.
        if let after = report.flowsAfter, let through = report.flowsThrough, through >= after {
            flowHead = try await stores.flows.acknowledge(host: host, after: after, through: through)
        }
        let desired = try await stores.desired.observe(host: host, report: report)
        if let local = report.local {
            try await stores.audit.record(actor: "local: \(local.operator)", role: nil, action: "local \(local.state.rawValue)",
                                          target: host.uuidString.lowercased(), detail: local.reason, remote: context.remote)
        }
        return JSON.response(ReportResponse(logAckedThrough: acked, state: desired, refusedFlows: refused, flowsAckedThrough: flowHead))
    }
}


/// The poll's first read, made inside the wait's check.
final class ReadBox: Sendable {
    let value = Mutex<Result<DesiredState?, any Error>?>(nil)
}
