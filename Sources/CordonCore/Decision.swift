import Foundation

/// One entry of the append-only decision log. Each entry's hash covers its fields and the previous
/// entry's hash, so altering or removing an entry breaks the chain from there on.
public struct Decision: Codable, Sendable, Equatable {
    /// The host's sequence number of this entry: 1, 2, 3, … without gaps (the server checks it).
    public var sequence: Int64
    public var id: String
    public var action: String
    public var `operator`: String
    public var reason: String
    public var backend: String
    public var policy: String
    public var policyDigest: String
    /// The management channel in force, as data (entries written from format 2 on).
    public var managementWhitelist: [ManagementChannel.WhitelistEntry]
    /// The channel as a sentence: entries of format 1, written before the whitelist was data.
    public var whitelist: String
    public var appliedAt: Int64
    public var outcome: String
    public var previousHash: String
    public var hash: String
    /// How the hash is taken: 1 (the first releases: the sentence, no sequence number), 2 (now).
    public var format: Int

    public static let currentFormat = 2

    public init(sequence: Int64, id: String, action: String, operator name: String, reason: String, backend: String, policy: String,
                policyDigest: String, managementWhitelist: [ManagementChannel.WhitelistEntry], whitelist: String, appliedAt: Int64,
                outcome: String, previousHash: String, hash: String, format: Int) {
        self.sequence = sequence
        self.id = id
        self.action = action
        self.operator = name
        self.reason = reason
        self.backend = backend
        self.policy = policy
        self.policyDigest = policyDigest
        self.managementWhitelist = managementWhitelist
        self.whitelist = whitelist
        self.appliedAt = appliedAt
        self.outcome = outcome
        self.previousHash = previousHash
        self.hash = hash
        self.format = format
    }

    /// The text the hash is taken over: every field, unambiguously separated.
    public static func chained(_ d: Decision) -> String {
        var fields = [d.previousHash]
        if d.format >= 2 {
            fields += [String(d.sequence), d.id, d.action, d.operator, d.reason, d.backend, d.policyDigest,
                       whitelistJSON(d.managementWhitelist), String(d.appliedAt), d.outcome]
        } else {
            fields += [d.id, d.action, d.operator, d.reason, d.backend, d.policyDigest, d.whitelist, String(d.appliedAt), d.outcome]
        }
        return fields.map { "\($0.utf8.count):\($0)" }.joined(separator: "|")
    }

    /// Canonical JSON (sorted keys): the same entries always hash the same.
    public static func whitelistJSON(_ entries: [ManagementChannel.WhitelistEntry]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(entries)) ?? Data("[]".utf8), as: UTF8.self)
    }
}

extension Decision {
    /// snake_case, as every JSON Cordon writes; the server receives entries in this form.
    enum CodingKeys: String, CodingKey {
        case sequence, id, action, `operator`, reason, backend, policy
        case policyDigest = "policy_digest", managementWhitelist = "management_whitelist", whitelist
        case appliedAt = "applied_at", outcome, previousHash = "previous_hash", hash, format = "hash_format"
    }

    /// Checks a run of entries: each hash over its fields, each link to the entry before, each
    /// policy against its digest, and no gap in the sequence. `previous` is the entry before the
    /// run (nil: the run starts the log, at sequence 1). One line per problem; empty when intact.
    /// The agent checks its own file with it, and the server every host's shipped log.
    public static func verifyChain(_ entries: [Decision], after previous: Decision? = nil) -> [String] {
        var problems: [String] = []
        var previousHash = previous?.hash ?? ""
        var previousSeq = previous?.sequence ?? 0
        for decision in entries {
            let seq = decision.sequence
            let label = "entry \(seq) (\(decision.action) by \(decision.operator), id \(decision.id))"
            // Sequences come from the wire too: no arithmetic here may overflow.
            let (step, overflow) = seq.subtractingReportingOverflow(previousSeq)
            if !overflow && step > 1 {
                problems.append("entries \(previousSeq + 1)-\(seq - 1) are missing before \(label)")
            } else if overflow || step != 1 {
                problems.append("\(label) is out of order: it follows entry \(previousSeq)")
            }
            if decision.previousHash != previousHash {
                problems.append("\(label) does not link to the entry before it")
            }
            if ContentDigest.hex(chained(decision)) != decision.hash { problems.append("\(label) was altered: its hash does not match its fields") }
            if ContentDigest.hex(decision.policy) != decision.policyDigest { problems.append("\(label): its policy does not match its digest") }
            previousHash = decision.hash
            previousSeq = seq
        }
        return problems
    }
}
