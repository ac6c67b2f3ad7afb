import CordonCore
import CordonWire
import Foundation
import Hummingbird

/// `/api/v1/rollouts`: the hosts a selector matches brought to enforce (with their effective
/// policy) or back to discovery, one wave at a time; `RolloutDriver` moves them on and halts them.
struct RolloutsController {
    let stores: Stores
    let deadline: DatabaseDeadline
    /// The soak's upper bound: a week.
    static let soakRange: ClosedRange<Int64> = 0...604_800

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("rollouts", use: deadline(list))
        group.post("rollouts", use: deadline(start, body: 64 << 10))
        group.get("rollouts/:id", use: deadline(show))
        group.post("rollouts/:id/halt", use: deadline({ try await control($0, $1, .halt) }, body: 64 << 10))
        group.post("rollouts/:id/resume", use: deadline({ try await control($0, $1, .resume) }, body: 64 << 10))
        group.post("rollouts/:id/abort", use: deadline({ try await control($0, $1, .abort) }, body: 64 << 10))
    }

    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        return JSON.response(Page(items: try await stores.rollouts.rollouts(limit: 100).map { $0.view(withHosts: false) }))
    }

    @Sendable func show(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        guard let rollout = try await stores.rollouts.rollout(id) else { throw APIFailure(.notFound, "no rollout with id \(id.uuidString.lowercased())", field: "id") }
        return JSON.response(rollout.view(withHosts: true))
    }

    @Sendable func start(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.approver)
        let body = try await JSON.decode(RolloutRequest.self, from: request, limit: 64 << 10)
        let selector = try HostSelection.parse(body.selector)
        let mode = body.mode ?? .enforce
        let waves = body.waves ?? RolloutRequest.defaultWaves
        do { try WaveSizes.check(waves) } catch { throw APIFailure(.unprocessableContent, error.description, field: "waves") }
        let soak = body.soakSeconds ?? 900
        guard Self.soakRange.contains(soak) else { throw APIFailure(.unprocessableContent, "expected 0 to 604800 seconds", field: "soak_seconds") }
        let window = body.confirmWindowSeconds ?? 120
        guard Engine.confirmRange.contains(window) else {
            throw APIFailure(.unprocessableContent, "expected \(Engine.confirmRange.lowerBound) to \(Engine.confirmRange.upperBound) seconds",
                             field: "confirm_window_seconds")
        }
        let maxFailures = body.maxFailures ?? 0
        guard maxFailures >= 0 else { throw APIFailure(.unprocessableContent, "expected 0 or more", field: "max_failures") }

        let matched = HostSelection.matching(selector, in: try await stores.hosts.directory())
        guard !matched.isEmpty else { throw APIFailure(.unprocessableContent, "selector \(selector) matches no host", field: "selector") }
        let views = try await stores.hosts.hosts(ids: matched.map(\.id))
        if mode == .enforce {
            let without = views.filter { $0.policy.assigned == nil }.map(\.hostname).sorted()
            guard without.isEmpty else {
                throw APIFailure(.unprocessableContent, "no assignment gives these hosts a policy to enforce: \(Self.list(without))", field: "selector")
            }
        }
        // The server can put back only what it set: a host enforcing a ruleset approved on the
        // host itself would lose it on a halt.
        let local = views.filter { $0.mode == "enforce" && $0.policy.desiredDigest == nil }.map(\.hostname).sorted()
        guard local.isEmpty else {
            throw APIFailure(.unprocessableContent, "these hosts enforce a ruleset approved on the host itself, which a halt could not put back: "
                             + "\(Self.list(local)); bring them to discovery first (cordon discover)", field: "selector")
        }
        let now = Date()
        let ordered = matched.sorted { ($0.hostname, $0.id.uuidString) < ($1.hostname, $1.id.uuidString) }
        let waveOf = WaveSizes.assign(waves, count: ordered.count)
        let rollout = Rollout(id: UUID(), selector: selector.description, mode: mode, waves: waves, soakSeconds: soak, confirmWindowSeconds: window,
                              maxFailures: maxFailures, state: .running, currentWave: 0, waveStartedAt: nil, soakUntil: nil, failures: 0,
                              haltReason: nil, createdBy: token.name, createdAt: now, updatedAt: now,
                              hosts: ordered.enumerated().map { Rollout.Host(id: $1.id, hostname: $1.hostname, wave: waveOf[$0], changedAt: now) })
        // One rollout per host at a time: two would fight over its document.
        let created = try await stores.rollouts.exclusive(wait: true) { () async throws -> Bool in
            let busy = try await Self.busy(ordered.map { ($0.id, $0.hostname) }, stores)
            guard busy.isEmpty else { throw APIFailure(.conflict, "hosts already in a running rollout: \(Self.list(busy))", field: "selector") }
            try await stores.rollouts.create(rollout)
            return true
        }
        guard created == true else { throw APIFailure(.serviceUnavailable, "the rollouts are locked; try again") }
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "rollout-start", target: rollout.id.uuidString.lowercased(),
                                      detail: "\(mode.rawValue) \(selector) (\(ordered.count) hosts) in waves \(waves.joined(separator: ",")), soak \(soak) s, "
                                          + "confirm within \(window) s, max failures \(maxFailures)",
                                      remote: context.remote)
        return JSON.response(rollout.view(withHosts: true), status: .created)
    }

    /// The hosts of `hosts` that a running rollout has yet to finish with, named with it.
    static func busy(_ hosts: [(UUID, String)], _ stores: Stores) async throws -> [String] {
        var busy: [String] = []
        for id in try await stores.rollouts.running() {
            guard let other = try await stores.rollouts.rollout(id) else { continue }
            let theirs = Set(other.hosts.filter { $0.wave >= other.currentWave }.map(\.id))
            busy += hosts.filter { theirs.contains($0.0) }.map { "\($0.1) (rollout \(id.uuidString.lowercased()))" }
        }
        return busy.sorted()
    }

    static func list(_ names: [String]) -> String {
        names.count <= 10 ? names.joined(separator: ", ") : names.prefix(10).joined(separator: ", ") + " and \(names.count - 10) more"
    }

    enum Control: String { case halt, resume, abort }

    @Sendable func control(_ request: Request, _ context: ServerContext, _ action: Control) async throws -> Response {
        let token = try context.require(.approver)
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        let body = try await JSON.decodeOptional(RolloutControl.self, from: request, limit: 64 << 10)
        if let reason = body?.reason, reason.schemaLength > 1000 || reason.isBlank {
            throw APIFailure(.unprocessableContent, "expected 1 to 1000 characters, not only white space", field: "reason")
        }
        let reason = body?.reason.map { "\(action.rawValue) by \(token.name): \($0)" } ?? "\(action.rawValue) by \(token.name)"
        let stores = self.stores
        let result = try await stores.rollouts.exclusive(wait: true) { () async throws -> Rollout in
            guard let rollout = try await stores.rollouts.rollout(id) else {
                throw APIFailure(.notFound, "no rollout with id \(id.uuidString.lowercased())", field: "id")
            }
            let now = Date()
            var next: Rollout
            switch action {
            case .halt:
                guard let step = RolloutPlanner.halt(rollout, reason: reason, now: now) else { throw Self.conflict(rollout, action) }
                next = step.rollout
                try await RolloutDriver.carry(step.commands, &next, stores, now: now)
            case .resume:
                guard let resumed = RolloutPlanner.resume(rollout, now: now) else { throw Self.conflict(rollout, action) }
                // Its hosts may have gone to another rollout meanwhile: two would fight over their documents.
                let busy = try await Self.busy(resumed.hosts.filter { $0.wave >= resumed.currentWave }.map { ($0.id, $0.hostname) }, stores)
                guard busy.isEmpty else { throw APIFailure(.conflict, "hosts now in a running rollout: \(Self.list(busy))", field: "id") }
                next = resumed
            case .abort:
                guard let step = RolloutPlanner.abort(rollout, reason: reason, now: now) else { throw Self.conflict(rollout, action) }
                next = step.rollout
                try await RolloutDriver.carry(step.commands, &next, stores, now: now)
            }
            try await stores.rollouts.save(next)
            return next
        }
        guard let result else { throw APIFailure(.serviceUnavailable, "the rollouts are locked; try again") }
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "rollout-\(action.rawValue)", target: id.uuidString.lowercased(),
                                      detail: reason, remote: context.remote)
        return JSON.response(result.view(withHosts: true))
    }

    static func conflict(_ rollout: Rollout, _ action: Control) -> APIFailure {
        APIFailure(.conflict, "rollout \(rollout.id.uuidString.lowercased()) is \(rollout.state.rawValue): it cannot be \(action == .halt ? "halted" : action == .resume ? "resumed" : "aborted")",
                   field: "id")
    }
}
