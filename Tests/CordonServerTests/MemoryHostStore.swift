import CordonCore
import CordonServer
import CordonWire
import Foundation

/// `PostgresHostStore` over the in-memory rows: the same view of a host, the same order.
struct MemoryHostStore: HostStore {
    let db: MemoryDatabase

    private static func view(_ row: MemoryDatabase.HostRow, among all: [UUID: MemoryDatabase.HostRow], now: Date,
                             modeError: String? = nil) -> HostView {
        let isolation = IsolationView(desired: row.desired.isolation.state, observed: row.observed, generation: row.desired.generation,
                                      observedGeneration: row.observedGeneration,
                                      pendingSince: row.observedGeneration < row.desired.generation ? MemoryDatabase.text(row.desiredAt) : nil)
        let status = row.status
        var view = HostView(
            id: row.id.uuidString.lowercased(), hostname: row.hostname, machineID: row.machineID, tags: row.tags, tagSources: row.tagSources,
            duplicateMachineID: all.values.contains { $0.machineID == row.machineID && $0.id != row.id && !$0.revoked },
            addresses: row.addresses, agentVersion: row.agentVersion, enrolledAt: MemoryDatabase.text(row.enrolledAt),
            lastSeen: row.lastSeen.map(MemoryDatabase.text),
            connected: !row.revoked && row.lastSeen.map { now.timeIntervalSince($0) < PostgresHostStore.connectedWithin } == true,
            revoked: row.revoked, mode: status?.mode,
            ruleset: status?.rulesetVersion.map { RulesetInForce(version: $0, digest: status?.rulesetDigest) },
            lostEvents: status?.lostEvents ?? 0, guardRestores: status?.guardRestores ?? 0, guardEscalations: status?.guardEscalations ?? 0,
            logProblems: row.logProblems, isolation: isolation,
            policy: PostgresHostStore.policy(assigned: row.assignedPolicy, desired: row.desired.policy?.digest, report: status,
                                             connected: !row.revoked && row.lastSeen.map { now.timeIntervalSince($0) < PostgresHostStore.connectedWithin } == true,
                                             applied: row.observedGeneration >= row.desired.generation, modeError: modeError))
        view.lastGuardRestore = status?.lastGuardRestore
        view.guardHint = GuardHint.text(recent: status?.recentGuardRestores)
        return view
    }

    /// The error of the failed mode intent the host's document names, as the SQL's subquery.
    static func modeError(_ row: MemoryDatabase.HostRow, _ t: MemoryDatabase.Tables) -> String? {
        guard let intent = row.desired.mode?.intentID else { return nil }
        return t.modeIntents.first { $0.id.uuidString.lowercased() == intent && $0.status == .failed }?.error
    }

    private static func sorted(_ rows: some Sequence<MemoryDatabase.HostRow>) -> [MemoryDatabase.HostRow] {
        rows.sorted { ($0.hostname, $0.id.uuidString) < ($1.hostname, $1.id.uuidString) }
    }

    func hosts(ids: [UUID]) async throws -> [HostView] {
        let now = db.now()
        return db.tables.withLock { t in Self.sorted(ids.compactMap { t.hosts[$0] }).map { Self.view($0, among: t.hosts, now: now, modeError: Self.modeError($0, t)) } }
    }

    func directory() async throws -> [HostEntry] {
        db.tables.withLock { t in
            Self.sorted(t.hosts.values.filter { !$0.revoked }).map {
                HostEntry(id: $0.id, hostname: $0.hostname, tags: $0.tags, management: $0.status?.management ?? [])
            }
        }
    }

    func changeTags(host: UUID, _ change: TagChange) async throws -> HostView? {
        try db.tables.withLock { t -> Bool in
            guard var row = t.hosts[host] else { return false }
            for key in change.unset {
                row.tags[key] = nil
                row.tagSources[key] = nil
            }
            for (key, value) in change.set {
                row.tags[key] = value
                row.tagSources[key] = "admin"
            }
            guard row.tags.count <= Limits.tags else { throw TooManyTags(count: row.tags.count) }
            t.hosts[host] = row
            return true
        } ? try await self.host(host) : nil
    }

    func hosts(limit: Int) async throws -> [HostView] {
        let now = db.now()
        return db.tables.withLock { t in
            Array(t.hosts.values.sorted { ($0.hostname, $0.id.uuidString) < ($1.hostname, $1.id.uuidString) }.prefix(limit)
                .map { Self.view($0, among: t.hosts, now: now, modeError: Self.modeError($0, t)) })
        }
    }

    func page(ids: [UUID]?, order: HostOrder, offset: Int, limit: Int) async throws -> (items: [HostView], total: Int) {
        let now = db.now()
        return db.tables.withLock { t in
            let rows = ids.map { $0.compactMap { t.hosts[$0] } } ?? Array(t.hosts.values)
            let views = Self.sorted(rows).map { Self.view($0, among: t.hosts, now: now, modeError: Self.modeError($0, t)) }
            return (Array(Self.ordered(views, order).dropFirst(offset).prefix(limit)), rows.count)
        }
    }

    /// `HostOrder.sql` over views that come sorted by name (the sort is stable).
    static func ordered(_ views: [HostView], _ order: HostOrder) -> [HostView] {
        func compare<T: Comparable>(_ x: T?, _ y: T?, nilsLast: Bool) -> Bool? {
            switch (x, y) {
            case let (x?, y?): return x == y ? nil : (x < y) != order.descending
            case (nil, nil): return nil
            case (nil, _): return !nilsLast
            case (_, nil): return nilsLast
            }
        }
        func before(_ a: HostView, _ b: HostView) -> Bool? {
            switch order.key {
            case .hostname: return compare(a.hostname, b.hostname, nilsLast: true)
            case .mode: return compare(a.mode, b.mode, nilsLast: true)
            case .connection: return compare(b.lastSeen, a.lastSeen, nilsLast: false)
            case .isolation: return compare(a.isolation.desired.rawValue, b.isolation.desired.rawValue, nilsLast: true)
                ?? compare(a.isolation.observed?.rawValue, b.isolation.observed?.rawValue, nilsLast: true)
            case .lostEvents: return compare(a.lostEvents, b.lostEvents, nilsLast: false)
            case .guardRestores: return compare(a.guardRestores, b.guardRestores, nilsLast: false)
            }
        }
        var sorted = views
        sorted.sort { a, b in
            before(a, b) ?? (order.key == .hostname && order.descending ? a.id > b.id : (a.hostname, a.id) < (b.hostname, b.id))
        }
        return sorted
    }

    func mapHosts() async throws -> [MapHostRow] {
        try await hosts(limit: .max).map { view in
            let waiting = view.policy.assigned.flatMap { $0.digest != view.policy.inForceDigest ? $0 : nil }
            return MapHostRow(id: UUID(uuidString: view.id)!, hostname: view.hostname, tags: view.tags, addresses: view.addresses,
                              enforcing: view.mode == "enforce", waitingDigest: waiting?.digest, waitingPolicy: waiting?.content)
        }
    }

    func marks() async throws -> [String: String] {
        var marks: [String: String] = [:]
        for host in try await hosts(limit: .max) {
            marks[host.id] = [host.isolation.desired.rawValue, host.isolation.observed?.rawValue ?? "", host.mode ?? "", host.connected ? "1" : "0",
                              host.policy.sync, String(host.lostEvents), String(host.guardRestores), String(host.logProblems)].joined(separator: "|")
        }
        return marks
    }

    func host(_ id: UUID) async throws -> HostView? {
        let now = db.now()
        return db.tables.withLock { t in t.hosts[id].map { Self.view($0, among: t.hosts, now: now, modeError: Self.modeError($0, t)) } }
    }

    func seen(_ ids: [UUID]) async throws {
        let now = db.now()
        db.tables.withLock { t in for id in ids { t.hosts[id]?.lastSeen = now } }
    }

    func counts() async throws -> (enrolled: Int, connected: Int) {
        let now = db.now()
        return db.tables.withLock { t in
            let enrolled = t.hosts.values.filter { !$0.revoked }
            return (enrolled.count, enrolled.filter { $0.lastSeen.map { now.timeIntervalSince($0) < PostgresHostStore.connectedWithin } == true }.count)
        }
    }
}
