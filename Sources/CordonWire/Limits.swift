import CordonCore
import Foundation

/// The bounds on what agents (and anyone holding an enrollment secret) may send, in one place:
/// the controllers enforce them and the OpenAPI document states the same numbers (a test holds
/// the two together). Unbounded, one host made every analyst's host list 14 MB.
public enum Limits {
    public static let hostname = 253
    public static let machineID = 128
    public static let agentVersion = 64
    public static let addresses = 64
    public static let tags = 32
    /// Collectors, resolvers and the extra whitelist of one agent.
    public static let managementEntries = 256
    public static let managementAddress = 64
    public static let tagValue = 255
    public static let secret = 256
    public static let rulesetDigest = 128
    public static let localOperator = 200
    public static let localReason = 1000
    public static let namesPerFlow = 16
    public static let name = 253
    public static let protocolName = 16
    /// Flow times from before this (2000-01-01) are a clock that was never set.
    public static let earliestFlowTime: Int64 = 946_684_800
    /// How far ahead of the server's clock a flow's time may be.
    public static let flowClockSkew: Int64 = 86_400
}

/// A field that breaks a limit: its path in the body and why.
public struct FieldProblem: Error, Equatable, Codable, Sendable {
    public var field: String
    public var message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }
}

public enum Validation {
    static func text(_ value: String, _ field: String, max: Int, allowEmpty: Bool = true) throws(FieldProblem) {
        if !allowEmpty && value.isEmpty { throw FieldProblem(field, "expected 1-\(max) characters") }
        if value.unicodeScalars.count > max { throw FieldProblem(field, "at most \(max) characters") }
    }

    static func addresses(_ values: [String], _ field: String) throws(FieldProblem) {
        if values.count > Limits.addresses { throw FieldProblem(field, "at most \(Limits.addresses) addresses") }
        for (index, value) in values.enumerated() where IPAddress(value) == nil {
            throw FieldProblem("\(field)[\(index)]", "expected an IPv4 or IPv6 address")
        }
    }

    static func tags(_ tags: [String: String], _ field: String) throws(FieldProblem) {
        if tags.count > Limits.tags { throw FieldProblem(field, "at most \(Limits.tags) tags") }
        for (key, value) in tags.sorted(by: { $0.key < $1.key }) {
            if !Tags.validKey(key) { throw FieldProblem(field, "tag key '\(key.prefix(64))': expected 1-63 letters, digits, '-', '_', '.', '/'") }
            try text(value, "\(field).\(key)", max: Limits.tagValue, allowEmpty: false)
        }
    }

    public static func tagChange(_ change: TagChange) throws(FieldProblem) {
        try tags(change.set, "set")
        if change.unset.count > Limits.tags { throw FieldProblem("unset", "at most \(Limits.tags) keys") }
        for (index, key) in change.unset.enumerated() where !Tags.validKey(key) {
            throw FieldProblem("unset[\(index)]", "expected 1-63 letters, digits, '-', '_', '.', '/'")
        }
        if let both = change.unset.first(where: { change.set[$0] != nil }) { throw FieldProblem("unset", "'\(both)' is also in set") }
        if change.set.isEmpty && change.unset.isEmpty { throw FieldProblem("set", "nothing to change: give set or unset") }
    }

    public static func enrollment(_ request: EnrollRequest) throws(FieldProblem) {
        try text(request.secret, "secret", max: Limits.secret, allowEmpty: false)
        try text(request.hostname, "hostname", max: Limits.hostname, allowEmpty: false)
        try text(request.machineID, "machine_id", max: Limits.machineID)
        try text(request.agentVersion, "agent_version", max: Limits.agentVersion)
        try addresses(request.addresses, "addresses")
        try tags(request.tags, "tags")
    }

    public static func status(_ status: AgentStatus) throws(FieldProblem) {
        guard ["discovery", "enforce"].contains(status.mode) else { throw FieldProblem("status.mode", "expected discovery or enforce") }
        try text(status.agentVersion, "status.agent_version", max: Limits.agentVersion)
        try addresses(status.addresses, "status.addresses")
        if let digest = status.rulesetDigest { try text(digest, "status.ruleset_digest", max: Limits.rulesetDigest) }
        if let last = status.lastGuardRestore { try text(last, "status.last_guard_restore", max: 64) }
        if let recent = status.recentGuardRestores, !(0...1_000_000).contains(recent) {
            throw FieldProblem("status.recent_guard_restores", "expected 0 to 1000000")
        }
        if let management = status.management {
            if management.count > Limits.managementEntries { throw FieldProblem("status.management", "at most \(Limits.managementEntries) entries") }
            for (index, entry) in management.enumerated() {
                try text(entry.protocol, "status.management[\(index)].protocol", max: Limits.protocolName)
                try text(entry.address, "status.management[\(index)].address", max: Limits.managementAddress)
            }
        }
    }

    /// The entries of a reported management channel that read as one; an unreadable entry is
    /// dropped by itself, as a bad flow row is: the report carries the isolation, which must count.
    public static func readable(_ management: [ManagementChannel.WhitelistEntry]) -> [ManagementChannel.WhitelistEntry] {
        management.filter { IPProtocolNumber.parse($0.protocol) != nil && IPPrefix($0.address) != nil }
    }

    public static func local(_ local: LocalIsolationChange) throws(FieldProblem) {
        try text(local.operator, "local.operator", max: Limits.localOperator)
        try text(local.reason, "local.reason", max: Limits.localReason)
        if let sequence = local.sequence, sequence < 1 { throw FieldProblem("local.sequence", "sequences start at 1") }
    }

    /// A DNS name as a resolver answers it: 1-253 characters in labels of 1-63.
    static func isName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= Limits.name else { return false }
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        return trimmed.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        }
    }

    static func flowTime(_ text: String, _ field: String, now: Int64) throws(FieldProblem) -> Int64 {
        guard let date = try? Date(text, strategy: .iso8601) else { throw FieldProblem(field, "expected an RFC 3339 time such as 2026-11-22T21:05:48Z") }
        let seconds = Int64(date.timeIntervalSince1970)
        guard seconds >= Limits.earliestFlowTime, seconds <= now + Limits.flowClockSkew else {
            throw FieldProblem(field, "expected a time between 2000 and a day from now")
        }
        return seconds
    }

    /// A flow row from a report; the first problem, with the field inside the row.
    public static func flow(_ flow: FlowRecord, now: Int64 = TimeText.now()) throws(FieldProblem) {
        guard !flow.protocol.isEmpty, flow.protocol.utf8.count <= Limits.protocolName, IPProtocolNumber.parse(flow.protocol) != nil else {
            throw FieldProblem("protocol", "expected a protocol name or number")
        }
        guard IPAddress(flow.localAddress) != nil else { throw FieldProblem("local_address", "expected an IPv4 or IPv6 address") }
        // Past the per-port cap the agent rolls remotes up into prefixes.
        guard IPAddress(flow.remoteAddress) != nil || IPPrefix(flow.remoteAddress) != nil else {
            throw FieldProblem("remote_address", "expected an address or a prefix")
        }
        let first = try flowTime(flow.firstSeen, "first_seen", now: now)
        let last = try flowTime(flow.lastSeen, "last_seen", now: now)
        guard first <= last else { throw FieldProblem("last_seen", "earlier than first_seen") }
        guard flow.remoteNames.count <= Limits.namesPerFlow else { throw FieldProblem("remote_names", "at most \(Limits.namesPerFlow) names") }
        for (index, name) in flow.remoteNames.enumerated() where !isName(name) {
            throw FieldProblem("remote_names[\(index)]", "expected a DNS name")
        }
    }
}
