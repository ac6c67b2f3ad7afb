/// The mode of the host's firewall, persisted so that a restarted agent (after a crash, an
/// upgrade, a reboot) puts the kernel back exactly where the operators left it.
public struct EnforcementState: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable { case discovery, enforce }
    public var mode: Mode = .discovery
    /// The approved ruleset version in force while enforcing.
    public var version: Int64?
    /// Unix seconds by which `cordon confirm` must come, or the agent rolls back; nil once confirmed.
    public var confirmDeadline: Int64?
    /// Seconds the operator gave for confirmation (0: a rollback scheduled after a failure).
    public var confirmWindow: Int64?
    /// The last enforcement an operator confirmed: where a rollback returns to (nil: discovery).
    public var confirmedVersion: Int64?
    /// Installed, and its management-channel check has not answered yet. A start that finds it
    /// rolls back: the check never passed.
    public var checking = false

    enum CodingKeys: String, CodingKey {
        case mode, version, confirmDeadline = "confirm_deadline", confirmWindow = "confirm_window"
        case confirmedVersion = "confirmed_version", checking
    }

    public init(mode: Mode = .discovery, version: Int64? = nil, confirmDeadline: Int64? = nil, confirmWindow: Int64? = nil,
                confirmedVersion: Int64? = nil, checking: Bool = false) {
        self.mode = mode
        self.version = version
        self.confirmDeadline = confirmDeadline
        self.confirmWindow = confirmWindow
        self.confirmedVersion = confirmedVersion
        self.checking = checking
    }

    /// Records of earlier releases have no `checking`: absent means false.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.decode(Mode.self, forKey: .mode)
        version = try c.decodeIfPresent(Int64.self, forKey: .version)
        confirmDeadline = try c.decodeIfPresent(Int64.self, forKey: .confirmDeadline)
        confirmWindow = try c.decodeIfPresent(Int64.self, forKey: .confirmWindow)
        confirmedVersion = try c.decodeIfPresent(Int64.self, forKey: .confirmedVersion)
        checking = try c.decodeIfPresent(Bool.self, forKey: .checking) ?? false
        if mode == .enforce && version == nil {
            throw DecodingError.dataCorruptedError(forKey: .version, in: c, debugDescription: "enforce without a ruleset version")
        }
    }

    /// The version in force: nil in discovery.
    public var inForce: Int64? { mode == .enforce ? version : nil }
    /// Awaiting confirmation (or a scheduled rollback).
    public var unconfirmed: Bool { mode == .enforce && confirmDeadline != nil }
}

/// Whether the isolation overlay is in force, persisted so that a restart never forgets one.
public struct IsolationState: Codable, Sendable, Equatable {
    public var isolated = false
    /// Unix seconds.
    public var since: Int64?
    public var `operator`: String?
    public var reason: String?
    /// The kernel handle of the overlay table as applied: release deletes exactly that table.
    public var handle: UInt64?
    /// The release whose collector check runs while the overlay is out of the kernel. A start
    /// that finds it isolates again: the release was never proven safe.
    public var releasing: String?

    public init(isolated: Bool = false, since: Int64? = nil, operator name: String? = nil, reason: String? = nil,
                handle: UInt64? = nil, releasing: String? = nil) {
        self.isolated = isolated
        self.since = since
        self.operator = name
        self.reason = reason
        self.handle = handle
        self.releasing = releasing
    }
}

/// Everything the agent persists about the firewall, read and written as one.
public struct HostState: Sendable, Equatable {
    public var enforcement: EnforcementState
    public var isolation: IsolationState

    public init(enforcement: EnforcementState = EnforcementState(), isolation: IsolationState = IsolationState()) {
        self.enforcement = enforcement
        self.isolation = isolation
    }

    /// The tables this state needs in the kernel: what every transition installs and what the
    /// guard compares the kernel with.
    public var required: RequiredTables {
        let e = enforcement
        let base: RequiredTables.Base = e.inForce.map {
            .enforcement(version: $0, deadline: e.confirmDeadline, fallback: e.confirmDeadline == nil ? nil : e.confirmedVersion)
        } ?? .discovery
        return RequiredTables(base: base, overlay: isolation.isolated && isolation.releasing == nil)
    }
}

/// Cordon's tables as a state needs them, before they are built from rulesets and the channel.
public struct RequiredTables: Sendable, Equatable {
    public enum Base: Sendable, Equatable {
        /// The accept-all table that makes the kernel track connections.
        case discovery
        /// An approved version; while unconfirmed, armed to fall back (to `fallback`, nil:
        /// discovery) by itself shortly after `deadline`.
        case enforcement(version: Int64, deadline: Int64?, fallback: Int64?)
    }
    public var base: Base
    public var overlay: Bool

    public init(base: Base, overlay: Bool) {
        self.base = base
        self.overlay = overlay
    }
}
