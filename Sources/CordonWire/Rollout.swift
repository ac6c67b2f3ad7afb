import CordonCore
import Foundation

// Rollouts in the API: the hosts a selector matches brought to a mode (enforce with their
// effective policy, or back to discovery) one wave at a time, halting by themselves.

/// `POST /api/v1/rollouts`.
public struct RolloutRequest: Codable, Sendable {
    public var selector: String
    /// `enforce` (the default) or `discovery`.
    public var mode: ModeWord?
    /// Cumulative wave sizes: a count of hosts (`1`) or a share of them (`10%`); the last must
    /// reach every host (`100%`). Default `1`, `10%`, `100%`.
    public var waves: [String]?
    /// How long a wave's hosts run confirmed before the next wave starts. Default 900.
    public var soakSeconds: Int64?
    /// Each host's confirm window. Default 120.
    public var confirmWindowSeconds: Int64?
    /// Failed hosts tolerated across the waves after the first (the first tolerates none). Default 0.
    public var maxFailures: Int?

    enum CodingKeys: String, CodingKey {
        case selector, mode, waves, soakSeconds = "soak_seconds", confirmWindowSeconds = "confirm_window_seconds", maxFailures = "max_failures"
    }

    public init(selector: String, mode: ModeWord? = nil, waves: [String]? = nil, soakSeconds: Int64? = nil, confirmWindowSeconds: Int64? = nil,
                maxFailures: Int? = nil) {
        self.selector = selector
        self.mode = mode
        self.waves = waves
        self.soakSeconds = soakSeconds
        self.confirmWindowSeconds = confirmWindowSeconds
        self.maxFailures = maxFailures
    }

    public static let defaultWaves = ["1", "10%", "100%"]
}

/// How many hosts the waves reach, cumulatively.
public enum WaveSizes {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Checks the sizes: counts from 1, shares from 1% to 100%, growing, the last 100%.
    public static func check(_ sizes: [String]) throws(Invalid) {
        guard !sizes.isEmpty, sizes.count <= 20 else { throw Invalid(description: "expected 1 to 20 waves") }
        for size in sizes where value(size) == nil {
            throw Invalid(description: "wave size \(size) is neither a count of hosts (1) nor a share of them (10%)")
        }
        guard sizes.last == "100%" else { throw Invalid(description: "the last wave must be 100% (every host)") }
    }

    static func value(_ size: String) -> (Int, percent: Bool)? {
        if size.hasSuffix("%") {
            guard let p = Int(size.dropLast()), (1...100).contains(p) else { return nil }
            return (p, true)
        }
        guard let n = Int(size), n >= 1 else { return nil }
        return (n, false)
    }

    /// The wave (0-based) of each of `count` hosts in order; waves that would add no host are
    /// dropped, so every wave has at least one host.
    public static func assign(_ sizes: [String], count: Int) -> [Int] {
        var reach: [Int] = []
        for size in sizes {
            guard let (n, percent) = value(size) else { continue }
            let cumulative = min(count, percent ? (count * n + 99) / 100 : n)
            if cumulative > (reach.last ?? 0) { reach.append(cumulative) }
        }
        var waves: [Int] = []
        for (wave, end) in reach.enumerated() { waves += Array(repeating: wave, count: end - waves.count) }
        return waves
    }
}

public enum RolloutState: String, Codable, Sendable, CaseIterable {
    case running, succeeded, halted, aborted
}

/// One host's part in a rollout.
public enum RolloutHostState: String, Codable, Sendable, CaseIterable {
    /// Its wave has not started.
    case waiting
    /// Already as the rollout wants it when its wave started: untouched.
    case skipped
    /// Its document asks for the mode; the host has not confirmed yet.
    case applying
    /// The host reports the generation applied and confirmed.
    case confirmed
    /// The host could not take the step without anything changing (offline at its wave's
    /// start, the step refused): counted against `max_failures`.
    case failed
    /// Its document was set back to what it asked before the rollout, after a halt or an abort.
    case reverted
}

public struct RolloutWaveView: Codable, Sendable, Equatable {
    public var number: Int
    public var size: String
    public var hosts: Int
    /// `waiting`, `running`, `soaking`, `done`, `halted`.
    public var state: String
    public var startedAt: String?
    public var soakUntil: String?

    enum CodingKeys: String, CodingKey { case number, size, hosts, state, startedAt = "started_at", soakUntil = "soak_until" }

    public init(number: Int, size: String, hosts: Int, state: String, startedAt: String?, soakUntil: String?) {
        self.number = number
        self.size = size
        self.hosts = hosts
        self.state = state
        self.startedAt = startedAt
        self.soakUntil = soakUntil
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(number, forKey: .number)
        try c.encode(size, forKey: .size)
        try c.encode(hosts, forKey: .hosts)
        try c.encode(state, forKey: .state)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encode(soakUntil, forKey: .soakUntil)
    }
}

public struct RolloutHostView: Codable, Sendable, Equatable {
    public var hostID: String
    public var hostname: String
    /// 1-based, as the waves are numbered.
    public var wave: Int
    public var state: RolloutHostState
    /// The document generation the rollout's step (or revert) set; null before it.
    public var generation: Int64?
    /// Why it is in this state (a rollback's message, the regressed flow, a revert's cause).
    public var detail: String?
    public var changedAt: String

    enum CodingKeys: String, CodingKey { case hostID = "host_id", hostname, wave, state, generation, detail, changedAt = "changed_at" }

    public init(hostID: String, hostname: String, wave: Int, state: RolloutHostState, generation: Int64?, detail: String?, changedAt: String) {
        self.hostID = hostID
        self.hostname = hostname
        self.wave = wave
        self.state = state
        self.generation = generation
        self.detail = detail
        self.changedAt = changedAt
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(hostID, forKey: .hostID)
        try c.encode(hostname, forKey: .hostname)
        try c.encode(wave, forKey: .wave)
        try c.encode(state, forKey: .state)
        try c.encode(generation, forKey: .generation)
        try c.encode(detail, forKey: .detail)
        try c.encode(changedAt, forKey: .changedAt)
    }
}

public struct RolloutView: Codable, Sendable, Equatable {
    public var id: String
    public var state: RolloutState
    public var mode: ModeWord
    public var selector: String
    public var waves: [RolloutWaveView]
    /// 1-based; the wave running, soaking or halted (the last one once succeeded).
    public var currentWave: Int
    public var soakSeconds: Int64
    public var confirmWindowSeconds: Int64
    public var maxFailures: Int
    /// Failed hosts so far, across the waves.
    public var failures: Int
    /// Names the host and the flow or check; null unless halted (or aborted after a halt).
    public var haltReason: String?
    public var createdBy: String
    public var createdAt: String
    public var updatedAt: String
    /// Every host with its state; null in lists.
    public var hosts: [RolloutHostView]?

    enum CodingKeys: String, CodingKey {
        case id, state, mode, selector, waves, currentWave = "current_wave", soakSeconds = "soak_seconds"
        case confirmWindowSeconds = "confirm_window_seconds", maxFailures = "max_failures", failures, haltReason = "halt_reason"
        case createdBy = "created_by", createdAt = "created_at", updatedAt = "updated_at", hosts
    }

    public init(id: String, state: RolloutState, mode: ModeWord, selector: String, waves: [RolloutWaveView], currentWave: Int, soakSeconds: Int64,
                confirmWindowSeconds: Int64, maxFailures: Int, failures: Int, haltReason: String?, createdBy: String, createdAt: String,
                updatedAt: String, hosts: [RolloutHostView]?) {
        self.id = id
        self.state = state
        self.mode = mode
        self.selector = selector
        self.waves = waves
        self.currentWave = currentWave
        self.soakSeconds = soakSeconds
        self.confirmWindowSeconds = confirmWindowSeconds
        self.maxFailures = maxFailures
        self.failures = failures
        self.haltReason = haltReason
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.hosts = hosts
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(state, forKey: .state)
        try c.encode(mode, forKey: .mode)
        try c.encode(selector, forKey: .selector)
        try c.encode(waves, forKey: .waves)
        try c.encode(currentWave, forKey: .currentWave)
        try c.encode(soakSeconds, forKey: .soakSeconds)
        try c.encode(confirmWindowSeconds, forKey: .confirmWindowSeconds)
        try c.encode(maxFailures, forKey: .maxFailures)
        try c.encode(failures, forKey: .failures)
        try c.encode(haltReason, forKey: .haltReason)
        try c.encode(createdBy, forKey: .createdBy)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encode(hosts, forKey: .hosts)
    }
}

/// `POST /api/v1/rollouts/{id}/halt|resume|abort`: why, for the audit log.
public struct RolloutControl: Codable, Sendable {
    public var reason: String?
    public init(reason: String?) { self.reason = reason }
}
