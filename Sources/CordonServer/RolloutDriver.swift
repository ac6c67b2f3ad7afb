import CordonCore
import CordonWire
import Foundation
import Logging
import ServiceLifecycle

/// Drives the running rollouts: once a second, on whichever replica holds the rollouts' lock,
/// each rollout's current wave is observed, `RolloutPlanner` decides, and its commands are carried
/// out through the hosts' documents. Everything it knows is in PostgreSQL, so a replica killed
/// mid-rollout (kill -9) loses nothing: the next holder of the lock goes on from the stored state.
public struct RolloutDriver: ServiceLifecycle.Service {
    let stores: Stores
    let logger: Logger
    let interval: Duration
    let started = Date()
    /// How long after the start rollouts are held: agents reconnect with a back-off of at most
    /// 30 s, jittered by half.
    public static let startGrace: TimeInterval = 45

    public init(stores: Stores, logger: Logger, interval: Duration = .seconds(1)) {
        self.stores = stores
        self.logger = logger
        self.interval = interval
    }

    public func run() async throws {
        var failing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: interval)
            do {
                try await Self.tick(stores, logger: logger, started: started)
                failing = false
            } catch {
                // A database outage: said once, tried again every second.
                if !failing { logger.warning("rollouts: \(error); retrying") }
                failing = true
            }
        }
    }

    /// One turn: every running rollout one step further, unless another replica is driving.
    /// `started`: when this server started (rollouts are held for `startGrace` after it).
    public static func tick(_ stores: Stores, logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
                            started: Date = .distantPast) async throws {
        _ = try await stores.rollouts.exclusive(wait: false) {
            for id in try await stores.rollouts.running() { try await drive(id, stores, logger: logger, now: now(), started: started) }
        }
    }

    static func drive(_ id: UUID, _ stores: Stores, logger: Logger, now: Date, started: Date) async throws {
        guard let rollout = try await stores.rollouts.rollout(id), rollout.state == .running else { return }
        // Restored from a backup: reported, never driven on (nor reverted) from an older record.
        if let why = try await stores.rollouts.restoredSince(id),
           let halted = RolloutPlanner.halt(rollout, reason: "the server's database was restored from an older backup (\(why)); "
                                            + "nothing reverted: resume or abort it once checked", now: now, revert: false) {
            try await stores.rollouts.save(halted.rollout)
            try await record(halted.rollout, from: rollout, stores, logger: logger)
            return
        }
        // Just started: no step, no wave, no timeout until the agents have had time to report,
        // so that a database restored from an older backup learns what they run (a re-base, which
        // halts the rollout above) before a rollout of its backup moves anything.
        guard now.timeIntervalSince(started) >= startGrace else { return }
        let wave = rollout.hosts.filter { $0.wave == rollout.currentWave }
        var generations: [UUID: Int64] = [:]
        for host in wave { if let g = host.generation { generations[host.id] = g } }
        var observations = try await stores.rollouts.observe(hosts: wave.map(\.id), generations: generations, mode: rollout.mode)
        for (host, regression) in try await regressions(wave, stores) { observations[host]?.regression = regression }

        let step = RolloutPlanner.step(rollout, observations: observations, now: now)
        var next = step.rollout
        try await carry(step.commands, &next, stores, now: now)
        guard next != rollout else { return }
        try await stores.rollouts.save(next)
        try await record(next, from: rollout, stores, logger: logger)
    }

    /// A new state or wave goes to the server's log and the audit log.
    static func record(_ next: Rollout, from rollout: Rollout, _ stores: Stores, logger: Logger) async throws {
        let id = next.id
        if next.state != rollout.state || next.currentWave != rollout.currentWave {
            let detail: String
            switch next.state {
            case .halted: detail = "halted in wave \(next.currentWave + 1): \(next.haltReason ?? "")"
            case .succeeded: detail = "succeeded: \(next.hosts.count) hosts in \(next.waveCount) waves"
            default: detail = "wave \(next.currentWave + 1) of \(next.waveCount) started"
            }
            logger.notice("rollout \(id.uuidString.lowercased()): \(detail)")
            try await stores.audit.record(actor: "cordon-server", role: nil, action: "rollout-\(next.state == .running ? "wave" : next.state.rawValue)",
                                          target: id.uuidString.lowercased(), detail: detail, remote: nil)
        }
    }

    /// For the wave's hosts that run the new policy: the rejected flows since their step began
    /// that their own record shows allowed before it.
    static func regressions(_ wave: [Rollout.Host], _ stores: Stores) async throws -> [UUID: String] {
        let active = wave.filter { [.applying, .confirmed].contains($0.state) && $0.startedAt != nil }
        guard let earliest = active.compactMap(\.startedAt).min() else { return [:] }
        let rejected = try await stores.flows.rejected(hosts: active.map(\.id), since: Time.text(earliest))
        var found: [UUID: String] = [:]
        for host in active {
            let start = Time.text(host.startedAt!)
            let recent = (rejected[host.id] ?? []).filter { $0.lastSeen >= start }
            guard !recent.isEmpty else { continue }
            let record = try await stores.flows.flows(host: host.id)
            for flow in recent.sorted(by: { $0.connections > $1.connections }) {
                if let earlier = Regression.earlier(flow, in: record, before: start) {
                    found[host.id] = Regression.describe(flow, earlier: earlier)
                    break
                }
            }
        }
        return found
    }

    /// Writes the planner's commands into the hosts' documents and records what came of each.
    static func carry(_ commands: [RolloutPlanner.Command], _ r: inout Rollout, _ stores: Stores, now: Date) async throws {
        for command in commands {
            let host: UUID, change: ModeChange, reason: String
            switch command {
            case .apply(let id):
                (host, change, reason) = (id, .rollout(r.mode, confirmWithin: r.confirmWindowSeconds),
                                          "rollout \(r.id.uuidString.lowercased()) wave \(r.currentWave + 1)")
            case .revert(let id, let previous):
                (host, change, reason) = (id, .restore(previous), "rollout \(r.id.uuidString.lowercased()) reverted: \(r.haltReason ?? "aborted")")
            }
            guard let index = r.hosts.firstIndex(where: { $0.id == host }) else { continue }
            do {
                let (generation, previous) = try await stores.desired.setMode(host: host, change, rollout: r.id, by: r.createdBy, reason: reason)
                r.hosts[index].generation = generation
                if case .apply = command { r.hosts[index].previous = previous }
            } catch ModeRefusal.restored {
                // Left as it is. A re-base since the wave began halts the rollout at the next turn
                // (`RolloutStore.restoredSince`); one just before it only delays this host's step.
                if case .apply = command { r.hosts[index].state = .waiting }
                r.hosts[index].detail = "not changed: re-based after a restore from an older backup"
            } catch let refusal as ModeRefusal where refusal == .noPolicy {
                r.hosts[index].state = .failed
                r.hosts[index].detail = "no effective policy (no assignment matches it)"
                r.failures += 1
            } catch let refusal as IsolationRefusal {
                let why = refusal == .revoked ? "revoked" : "no such host"
                if case .revert = command {
                    // A host revoked (or deleted) since its step has no document to put back; the
                    // halt is saved all the same, or it would be tried again every second.
                    r.hosts[index].detail = "not put back: \(why)"
                } else {
                    r.hosts[index].state = .failed
                    r.hosts[index].detail = why
                    r.failures += 1
                }
            }
            r.hosts[index].changedAt = now
        }
    }
}
