import CordonWire
import Foundation

/// A rollout as stored: its waves and each host's step.
public struct Rollout: Sendable, Equatable {
    public var id: UUID
    public var selector: String
    public var mode: ModeWord
    public var waves: [String]
    public var soakSeconds: Int64
    public var confirmWindowSeconds: Int64
    public var maxFailures: Int
    public var state: RolloutState
    /// 0-based.
    public var currentWave: Int
    public var waveStartedAt: Date?
    public var soakUntil: Date?
    public var failures: Int
    public var haltReason: String?
    public var createdBy: String
    public var createdAt: Date
    public var updatedAt: Date
    /// In wave order.
    public var hosts: [Host]

    public struct Host: Sendable, Equatable {
        public var id: UUID
        public var hostname: String
        /// 0-based.
        public var wave: Int
        public var state: RolloutHostState
        public var generation: Int64?
        public var detail: String?
        /// The host's document (mode and policy) before the step: what a halt puts back.
        public var previous: Previous?
        public var startedAt: Date?
        public var changedAt: Date

        public init(id: UUID, hostname: String, wave: Int, state: RolloutHostState = .waiting, generation: Int64? = nil, detail: String? = nil,
                    previous: Previous? = nil, startedAt: Date? = nil, changedAt: Date) {
            self.id = id
            self.hostname = hostname
            self.wave = wave
            self.state = state
            self.generation = generation
            self.detail = detail
            self.previous = previous
            self.startedAt = startedAt
            self.changedAt = changedAt
        }
    }

    public struct Previous: Codable, Sendable, Equatable {
        public var mode: ModeIntent?
        public var policy: EffectivePolicy?
        public init(mode: ModeIntent?, policy: EffectivePolicy?) {
            self.mode = mode
            self.policy = policy
        }
    }

    public init(id: UUID, selector: String, mode: ModeWord, waves: [String], soakSeconds: Int64, confirmWindowSeconds: Int64, maxFailures: Int,
                state: RolloutState, currentWave: Int, waveStartedAt: Date?, soakUntil: Date?, failures: Int, haltReason: String?, createdBy: String,
                createdAt: Date, updatedAt: Date, hosts: [Host]) {
        self.id = id
        self.selector = selector
        self.mode = mode
        self.waves = waves
        self.soakSeconds = soakSeconds
        self.confirmWindowSeconds = confirmWindowSeconds
        self.maxFailures = maxFailures
        self.state = state
        self.currentWave = currentWave
        self.waveStartedAt = waveStartedAt
        self.soakUntil = soakUntil
        self.failures = failures
        self.haltReason = haltReason
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.hosts = hosts
    }

    public var waveCount: Int { (hosts.map(\.wave).max() ?? -1) + 1 }

    public func view(withHosts: Bool) -> RolloutView {
        let count = waveCount
        let waveViews = (0..<count).map { wave -> RolloutWaveView in
            let members = hosts.filter { $0.wave == wave }
            let word: String
            if wave < currentWave || state == .succeeded { word = "done" }
            else if wave > currentWave { word = "waiting" }
            else if state == .halted || state == .aborted { word = state.rawValue }
            else if soakUntil != nil { word = "soaking" }
            else { word = "running" }
            return RolloutWaveView(number: wave + 1, size: wave < waves.count ? Self.sizeLabel(waves, wave: wave, hosts: hosts.count) : "100%",
                                   hosts: members.count, state: word,
                                   startedAt: wave == currentWave ? waveStartedAt.map(Time.text) : members.compactMap(\.startedAt).min().map(Time.text),
                                   soakUntil: wave == currentWave ? soakUntil.map(Time.text) : nil)
        }
        return RolloutView(id: id.uuidString.lowercased(), state: state, mode: mode, selector: selector, waves: waveViews, currentWave: currentWave + 1,
                           soakSeconds: soakSeconds, confirmWindowSeconds: confirmWindowSeconds, maxFailures: maxFailures, failures: failures,
                           haltReason: haltReason, createdBy: createdBy, createdAt: Time.text(createdAt), updatedAt: Time.text(updatedAt),
                           hosts: withHosts ? hosts.map {
                               RolloutHostView(hostID: $0.id.uuidString.lowercased(), hostname: $0.hostname, wave: $0.wave + 1, state: $0.state,
                                               generation: $0.generation, detail: $0.detail, changedAt: Time.text($0.changedAt))
                           } : nil)
    }

    /// The size the analyst asked for the wave that remains after empty ones were dropped.
    static func sizeLabel(_ sizes: [String], wave: Int, hosts: Int) -> String {
        var reach = 0, kept: [String] = []
        for size in sizes {
            let cumulative = WaveSizes.assign([size], count: hosts).count
            let next = max(reach, min(hosts, cumulative))
            if next > reach { kept.append(size); reach = next }
        }
        return wave < kept.count ? kept[wave] : "100%"
    }
}

/// What the driver found out about one host of the current wave, from the database.
public struct RolloutObservation: Sendable, Equatable {
    /// The agent called in recently.
    public var connected: Bool
    /// Already as the rollout wants it (document and agent), for a host whose wave starts.
    public var inSync: Bool
    /// The host has no policy to enforce (no assignment matches it any more).
    public var noPolicy: Bool
    /// What the agent reported for the step's generation, once it did.
    public var result: AppliedGeneration?
    /// A flow the host now rejects that its own record shows it had before the rollout.
    public var regression: String?

    public init(connected: Bool, inSync: Bool = false, noPolicy: Bool = false, result: AppliedGeneration? = nil, regression: String? = nil) {
        self.connected = connected
        self.inSync = inSync
        self.noPolicy = noPolicy
        self.result = result
        self.regression = regression
    }
}

/// The rollout's decisions, without a database or a clock: the stored rollout, what was observed
/// of the current wave's hosts and the time in; the rollout as it should be stored and the
/// documents to write out. The driver carries them out and stores the result.
public enum RolloutPlanner {
    /// Time past a host's confirm window in which its report may still arrive (the agent
    /// reports every few seconds).
    public static let reportGrace: TimeInterval = 15

    public enum Command: Sendable, Equatable {
        /// Set the host's document to the rollout's mode (with its effective policy).
        case apply(UUID)
        /// Put back the host's document as it was before its step.
        case revert(UUID, Rollout.Previous?)
    }

    public struct Step: Sendable, Equatable {
        public var rollout: Rollout
        public var commands: [Command]
    }

    public static func step(_ rollout: Rollout, observations: [UUID: RolloutObservation], now: Date) -> Step {
        var r = rollout
        var commands: [Command] = []
        guard r.state == .running else { return Step(rollout: r, commands: []) }
        let wave = r.currentWave
        if r.waveStartedAt == nil { r.waveStartedAt = now }
        func halt(_ reason: String) -> Step {
            r.state = .halted
            r.haltReason = reason
            r.soakUntil = nil
            commands += revertWave(&r, now: now, because: reason)
            r.updatedAt = now
            return Step(rollout: r, commands: commands)
        }
        for index in r.hosts.indices where r.hosts[index].wave == wave {
            let host = r.hosts[index]
            let seen = observations[host.id] ?? RolloutObservation(connected: false)
            func set(_ state: RolloutHostState, _ detail: String?) {
                r.hosts[index].state = state
                r.hosts[index].detail = detail
                r.hosts[index].changedAt = now
            }
            switch host.state {
            case .waiting:
                if seen.inSync { set(.skipped, "already in sync") }
                else if !seen.connected { set(.failed, "offline when its wave started"); r.failures += 1 }
                else if seen.noPolicy && r.mode == .enforce { set(.failed, "no effective policy (no assignment matches it)"); r.failures += 1 }
                else {
                    set(.applying, nil)
                    r.hosts[index].startedAt = now
                    commands.append(.apply(host.id))
                }
            case .applying:
                if let regression = seen.regression { return halt("host \(host.hostname): regression: \(regression)") }
                if let result = seen.result {
                    if result.ok {
                        set(.confirmed, nil)
                    } else if result.rolledBack == true {
                        set(.applying, "rolled back: \(result.error ?? "no reason given")")
                        return halt("host \(host.hostname) rolled back: \(result.error ?? "no reason given")")
                    } else {
                        set(.failed, result.error ?? "the step failed")
                        r.failures += 1
                    }
                } else if let started = host.startedAt, host.generation != nil,
                          now.timeIntervalSince(started) > TimeInterval(r.confirmWindowSeconds) + reportGrace {
                    return halt("host \(host.hostname) did not report within its confirm window (\(r.confirmWindowSeconds) s)")
                }
            case .confirmed:
                if let regression = seen.regression { return halt("host \(host.hostname): regression: \(regression)") }
            case .skipped, .failed, .reverted:
                break
            }
        }
        // The first wave tolerates no failure; the later ones `max_failures` in all.
        let allowed = wave == 0 ? 0 : r.maxFailures
        if r.failures > allowed {
            let failed = r.hosts.filter { $0.wave <= wave && $0.state == .failed }.map { "\($0.hostname) (\($0.detail ?? "failed"))" }
            return halt("\(r.failures) failed hosts, more than the \(allowed) allowed\(wave == 0 ? " in the first wave" : ""): "
                        + failed.joined(separator: ", "))
        }
        let members = r.hosts.filter { $0.wave == wave }
        let settled = members.allSatisfy { [.confirmed, .skipped, .failed].contains($0.state) }
        if settled {
            if r.soakUntil == nil { r.soakUntil = now.addingTimeInterval(TimeInterval(r.soakSeconds)) }
            if now >= r.soakUntil! {
                if wave + 1 < r.waveCount {
                    r.currentWave = wave + 1
                    r.waveStartedAt = now
                    r.soakUntil = nil
                    // The next wave starts now: its hosts are looked at on the next step, with
                    // observations taken for them.
                } else {
                    r.state = .succeeded
                    r.soakUntil = nil
                }
            }
        }
        if r != rollout { r.updatedAt = now }
        return Step(rollout: r, commands: commands)
    }

    /// The current wave's hosts that the rollout changed go back to their documents before it.
    static func revertWave(_ r: inout Rollout, now: Date, because reason: String) -> [Command] {
        var commands: [Command] = []
        for index in r.hosts.indices where r.hosts[index].wave == r.currentWave {
            let host = r.hosts[index]
            guard [.applying, .confirmed].contains(host.state) else { continue }
            commands.append(.revert(host.id, host.previous))
            r.hosts[index].state = .reverted
            r.hosts[index].detail = host.detail ?? "the rollout halted: \(reason)"
            r.hosts[index].changedAt = now
        }
        return commands
    }

    /// An analyst's halt: as an automatic one, the current wave going back. Without `revert`,
    /// the hosts stay as they are: after a restore from an older backup the rollout's record of
    /// what they ran before is older than what they run, and putting it back could bring back
    /// a policy the restore lost the reasons for.
    public static func halt(_ rollout: Rollout, reason: String, now: Date, revert: Bool = true) -> Step? {
        guard rollout.state == .running else { return nil }
        var r = rollout
        r.state = .halted
        r.haltReason = reason
        r.soakUntil = nil
        let commands = revert ? revertWave(&r, now: now, because: reason) : []
        r.updatedAt = now
        return Step(rollout: r, commands: commands)
    }

    /// Resumes a halted rollout at the wave it halted in, whose hosts start again (with the
    /// effective policy they have then, so a corrected ruleset is what they get); the failures
    /// counted so far are forgiven, having been looked at.
    public static func resume(_ rollout: Rollout, now: Date) -> Rollout? {
        guard rollout.state == .halted else { return nil }
        var r = rollout
        r.state = .running
        r.haltReason = nil
        r.failures = 0
        r.waveStartedAt = now
        r.soakUntil = nil
        for index in r.hosts.indices where r.hosts[index].wave == r.currentWave && r.hosts[index].state != .skipped {
            r.hosts[index].state = .waiting
            r.hosts[index].detail = nil
            r.hosts[index].generation = nil
            r.hosts[index].startedAt = nil
            r.hosts[index].changedAt = now
        }
        r.updatedAt = now
        return r
    }

    /// Ends a rollout for good: a running wave goes back, as on a halt; waves done stay done.
    public static func abort(_ rollout: Rollout, reason: String, now: Date) -> Step? {
        guard rollout.state == .running || rollout.state == .halted else { return nil }
        var r = rollout
        let commands = rollout.state == .running ? revertWave(&r, now: now, because: reason) : []
        r.state = .aborted
        r.haltReason = r.haltReason ?? reason
        r.soakUntil = nil
        r.updatedAt = now
        return Step(rollout: r, commands: commands)
    }
}
