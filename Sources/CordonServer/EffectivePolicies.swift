import CordonCore
import CordonWire
import Foundation

/// Each host's effective policy from the assignments in force: recomputed whole after any change
/// of tags, assignments or versions, and written only where it changed. Whole, because a
/// selector can move any host in or out; cheap, because hosts with the same assignments share
/// one composition (a tier of 10,000 hosts is a handful of distinct sets).
enum EffectivePolicies {
    struct Resolved {
        var assignment: StoredAssignment
        var selector: Selector
        var version: Int64
        var ruleset: Ruleset
    }

    /// The active assignments with their selectors and rulesets read; one whose version is gone
    /// or unreadable is left out and named.
    static func resolve(_ stores: Stores) async throws -> (resolved: [Resolved], problems: [String]) {
        var resolved: [Resolved] = [], problems: [String] = []
        var cache: [String: (Int64, Ruleset)] = [:]
        for assignment in try await stores.policy.assignments() {
            let key = "\(assignment.ruleset)@\(assignment.version.map(String.init) ?? "latest")"
            if cache[key] == nil, let version = try await stores.policy.version(name: assignment.ruleset, version: assignment.version),
               let content = version.content, let ruleset = try? RulesetParser.parse(content, file: "\(version.name)@\(version.version)") {
                cache[key] = (version.version, ruleset)
            }
            guard let (version, ruleset) = cache[key], let selector = try? Selector(parsing: assignment.selector) else {
                problems.append("assignment \(assignment.id.uuidString.lowercased()) (\(key)) cannot be read")
                continue
            }
            resolved.append(Resolved(assignment: assignment, selector: selector, version: version, ruleset: ruleset))
        }
        return (resolved, problems)
    }

    /// The policy `parts` make: its text, digest and sources.
    static func policy(_ parts: [PolicyComposer.Part]) -> EffectivePolicy {
        let (union, sources) = PolicyComposer.compose(parts)
        let content = RulesetText.render(union, header: ["The effective policy cordon-server composed from these assignments:"]
                                          + parts.map { "  \($0.name) version \($0.version) (assignment \($0.assignment))" })
        return EffectivePolicy(content: content, digest: ContentDigest.hex(content),
                               sources: sources.map { .init(rule: $0.rule, ruleset: $0.ruleset, version: $0.version, assignment: $0.assignment) })
    }

    /// The parts for a host: every resolved assignment whose selector matches it.
    static func parts(for host: HostEntry, _ resolved: [Resolved], excluding ruleset: String? = nil) -> [PolicyComposer.Part] {
        resolved.filter { $0.assignment.ruleset != ruleset && $0.selector.matches(host.tags, agent: host.hostname) }
            .map { PolicyComposer.Part(ruleset: $0.ruleset, name: $0.assignment.ruleset, version: $0.version,
                                       assignment: $0.assignment.id.uuidString.lowercased()) }
    }

    /// Recomputes and writes what changed; the number of hosts whose policy changed. `only`:
    /// these hosts alone (a host just enrolled), read by id instead of the whole directory.
    @discardableResult
    static func recompute(_ stores: Stores, only: [UUID]? = nil) async throws -> Int {
        let directory: [HostEntry]
        var current: [UUID: String] = [:]
        if let only {
            let views = try await stores.hosts.hosts(ids: only)
            directory = views.compactMap { view in UUID(uuidString: view.id).map { HostEntry(id: $0, hostname: view.hostname, tags: view.tags) } }
            for view in views { if let id = UUID(uuidString: view.id), let digest = view.policy.assigned?.digest { current[id] = digest } }
        } else {
            directory = try await stores.hosts.directory()
            current = try await stores.policy.assignedDigests()
        }
        let (resolved, _) = try await resolve(stores)
        var memo: [[String]: EffectivePolicy] = [:]
        var changes: [UUID: EffectivePolicy?] = [:]
        for host in directory {
            let parts = parts(for: host, resolved)
            var policy: EffectivePolicy?
            if !parts.isEmpty {
                let key = parts.map { "\($0.assignment)@\($0.version)" }.sorted()
                if memo[key] == nil { memo[key] = Self.policy(parts) }
                policy = memo[key]
            }
            if policy?.digest != current[host.id] { changes[host.id] = .some(policy) }
        }
        try await stores.policy.setAssigned(changes)
        return changes.count
    }
}
