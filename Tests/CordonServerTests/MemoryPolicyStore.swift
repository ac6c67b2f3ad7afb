import CordonCore
import CordonServer
import CordonWire
import Foundation

/// `PostgresPolicyStore` over the in-memory rows: versions numbered per name from 1 and never
/// changed, assignments removed by marking them gone (here: dropped from the active list).
struct MemoryPolicyStore: PolicyStore {
    let db: MemoryDatabase

    func rulesets() async throws -> [(name: String, versions: [RulesetVersionView])] {
        db.tables.withLock { t in
            Dictionary(grouping: t.versions.map { var v = $0; v.content = nil; return v }, by: \.name)
                .map { (name: $0.key, versions: $0.value.sorted { $0.version > $1.version }) }.sorted { $0.name < $1.name }
        }
    }

    func version(name: String, version: Int64?) async throws -> RulesetVersionView? {
        db.tables.withLock { t in
            t.versions.filter { $0.name == name && (version == nil || $0.version == version) }.max { $0.version < $1.version }
        }
    }

    func addVersion(name: String, content: String, sha256: String, approvedBy: String, selector: String, review: ReviewSummary,
                    risksAccepted: [String]) async throws -> RulesetVersionView {
        db.tables.withLock { t in
            let next = (t.versions.filter { $0.name == name }.map(\.version).max() ?? 0) + 1
            let stored = RulesetVersionView(name: name, version: next, sha256: sha256, approvedBy: approvedBy, approvedAt: MemoryDatabase.text(Date()),
                                            selector: selector, risksAccepted: risksAccepted, review: review, content: content)
            t.versions.append(stored)
            var answer = stored
            answer.content = nil
            return answer
        }
    }

    func assignments() async throws -> [StoredAssignment] {
        db.tables.withLock { $0.assignments.sorted { ($0.ruleset, $0.createdAt) < ($1.ruleset, $1.createdAt) } }
    }

    func addAssignment(ruleset: String, version: Int64?, selector: String, by name: String) async throws -> UUID {
        let id = UUID()
        db.tables.withLock {
            $0.assignments.append(StoredAssignment(id: id, ruleset: ruleset, version: version, selector: selector, createdBy: name, createdAt: Date()))
        }
        return id
    }

    func removeAssignment(_ id: UUID, by name: String) async throws -> Bool {
        db.tables.withLock { t in
            guard let index = t.assignments.firstIndex(where: { $0.id == id }) else { return false }
            t.assignments.remove(at: index)
            return true
        }
    }

    func assignedDigests() async throws -> [UUID: String] {
        db.tables.withLock { t in t.hosts.compactMapValues { $0.assignedPolicy?.digest } }
    }

    func setAssigned(_ policies: [UUID: EffectivePolicy?]) async throws {
        db.tables.withLock { t in
            for (id, policy) in policies { t.hosts[id]?.assignedPolicy = policy }
        }
    }
}
