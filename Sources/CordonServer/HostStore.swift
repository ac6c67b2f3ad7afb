import CordonCore
import CordonWire
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The record of every host, as the API shows it.
public protocol HostStore: Sendable {
    func hosts(limit: Int) async throws -> [HostView]
    func hosts(ids: [UUID]) async throws -> [HostView]
    /// One page in the order asked, sorted and cut by the store: the console's fleet page at
    /// 10,000 hosts reads its 50 rows, not 10,000 (7.6 s before). `ids` nil: every host, revoked
    /// ones too.
    func page(ids: [UUID]?, order: HostOrder, offset: Int, limit: Int) async throws -> (items: [HostView], total: Int)
    func host(_ id: UUID) async throws -> HostView?
    /// Every host as the dependency map places it: no status document, and a policy's text
    /// only where it waits for a rollout (read once per policy).
    func mapHosts() async throws -> [MapHostRow]
    /// Per host, one text that changes whenever what a console page shows of it may have:
    /// `FleetEvents` compares them every second while a page listens, so the read is narrow
    /// (the inputs of policy sync, not the views).
    func marks() async throws -> [String: String]
    /// Every host that is not revoked, with its name and tags: what selectors are evaluated on.
    func directory() async throws -> [HostEntry]
    /// An administrator's tags: set ones win over the secret's and the host's, unset ones go
    /// whatever set them. nil when there is no such host; a change over the tag limit is refused.
    func changeTags(host: UUID, _ change: TagChange) async throws -> HostView?
    /// The agents whose long polls ran since the last call: their connection is alive.
    func seen(_ ids: [UUID]) async throws
    /// Hosts enrolled (not revoked), and those of them connected now: the metrics' gauges.
    func counts() async throws -> (enrolled: Int, connected: Int)
}

/// The host list's orders. Policy sync is not one: it is worked out from five facts per host,
/// and sorting by it would read every host again.
public struct HostOrder: Sendable, Equatable {
    public enum Key: String, CaseIterable, Sendable {
        case hostname, mode, connection, isolation
        case lostEvents = "lost_events", guardRestores = "guard_restores"
    }
    public var key: Key
    public var descending: Bool

    public init(_ key: Key = .hostname, descending: Bool = false) {
        self.key = key
        self.descending = descending
    }

    /// The ORDER BY; ties by name, then id, so that pages never overlap. `connection` ascending
    /// is the most recently seen first: connected hosts lead.
    var sql: String {
        let (forward, backward) = descending ? ("DESC", "ASC") : ("ASC", "DESC")
        switch key {
        case .hostname: return "hostname \(forward), id \(forward)"
        case .mode: return "status->>'mode' \(forward) NULLS LAST, hostname, id"
        case .connection: return "last_seen \(backward) NULLS LAST, hostname, id"
        case .isolation: return "desired->'isolation'->>'state' \(forward), observed_state \(forward) NULLS LAST, hostname, id"
        case .lostEvents: return "coalesce((status->>'lost_events')::numeric, 0) \(forward), hostname, id"
        case .guardRestores: return "coalesce((status->>'guard_restores')::numeric, 0) \(forward), hostname, id"
        }
    }
}

/// A host as the map sees it.
public struct MapHostRow: Sendable {
    public var id: UUID
    public var hostname: String
    public var tags: [String: String]
    public var addresses: [String]
    /// Its agent reports enforcing: what it let through, a rule allowed.
    public var enforcing: Bool
    /// The digest and text of the policy assigned to it and not yet in force.
    public var waitingDigest: String?
    public var waitingPolicy: String?

    public init(id: UUID, hostname: String, tags: [String: String], addresses: [String], enforcing: Bool, waitingDigest: String? = nil,
                waitingPolicy: String? = nil) {
        self.id = id
        self.hostname = hostname
        self.tags = tags
        self.addresses = addresses
        self.enforcing = enforcing
        self.waitingDigest = waitingDigest
        self.waitingPolicy = waitingPolicy
    }
}

/// A host as selectors see it.
public struct HostEntry: Sendable, Equatable {
    public var id: UUID
    public var hostname: String
    public var tags: [String: String]
    /// Its management channel as its agent last reported it (empty before 0.3.0 agents report it).
    public var management: [ManagementChannel.WhitelistEntry]
    public init(id: UUID, hostname: String, tags: [String: String], management: [ManagementChannel.WhitelistEntry] = []) {
        self.id = id
        self.hostname = hostname
        self.tags = tags
        self.management = management
    }
}

/// A tag change that would leave a host with more tags than an agent may send.
public struct TooManyTags: Error {
    public let count: Int
    public init(count: Int) { self.count = count }
}

public struct PostgresHostStore: HostStore {
    /// A host whose agent has not polled for this long is not connected (a poll lasts 25 s; polls
    /// are written every 5 s).
    public static let connectedWithin: Double = 40
    let client: PostgresClient
    let logger: Logger
    /// The map's hosts, kept in memory and read again where what the map shows of them changed
    /// (`hosts.map_changed_txid`): every agent contact rewrites its host's row, but rarely its
    /// name, tags, addresses or mode, and reading 10,000 hosts was a third of a map's time.
    private let mapCache = StampedCache(MapHosts())
    /// Waiting policies' texts by digest, for the map's amber edges.
    private let policyTexts = PolicyTexts()

    final class PolicyTexts: Sendable {
        let kept = Mutex<[String: String]>([:])
    }

    /// The hosts by name (then id), and where each is.
    struct MapHosts: Sendable {
        var rows: [MapHostRow] = []
        var index: [UUID: Int] = [:]

        mutating func apply(_ changes: [MapHostRow]) {
            guard !changes.isEmpty else { return }
            for row in changes {
                if let at = index[row.id] { rows[at] = row } else { index[row.id] = rows.count; rows.append(row) }
            }
            rows.sort { a, b in
                a.hostname.utf8.elementsEqual(b.hostname.utf8) ? a.id.uuidString < b.id.uuidString : a.hostname.utf8.lexicographicallyPrecedes(b.hostname.utf8)
            }
            index = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1.id, $0) })
        }
    }

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    private static let columns = """
        id, hostname, machine_id, tags::text, addresses::text, agent_version, enrolled_at, last_seen, revoked_at IS NOT NULL, status::text,
        desired->'isolation'->>'state', observed_state, generation, observed_generation, desired_at, log_problems::bigint, tag_sources::text,
        EXISTS (SELECT 1 FROM hosts other WHERE other.machine_id = hosts.machine_id AND other.id <> hosts.id AND other.revoked_at IS NULL),
        assigned_policy::text, desired->'policy'->>'digest',
        (SELECT error FROM intents WHERE id = (hosts.desired->'mode'->>'intent_id')::uuid AND status = 'failed')
        """

    private func views(_ rows: PostgresRowSequence) async throws -> [HostView] {
        var result: [HostView] = []
        let now = Date()
        for try await row in rows {
            let (id, hostname, machineID, tags, addresses, version, enrolled, lastSeen, revoked, status) =
                try row.decode((UUID, String, String, String, String, String, Date, Date?, Bool, String?).self)
            let columns = row.makeRandomAccess()
            let desired = try columns[10].decode(String.self, context: .default)
            let observed = try columns[11].decode(String?.self, context: .default)
            let generation = try columns[12].decode(Int64.self, context: .default)
            let observedGeneration = try columns[13].decode(Int64.self, context: .default)
            let desiredAt = try columns[14].decode(Date.self, context: .default)
            let problems = try columns[15].decode(Int64.self, context: .default)
            let tagSources = try columns[16].decode(String.self, context: .default)
            let duplicate = try columns[17].decode(Bool.self, context: .default)
            let assigned = try columns[18].decode(String?.self, context: .default).flatMap { try? Wire.decode(EffectivePolicy.self, from: Data($0.utf8)) }
            let desiredDigest = try columns[19].decode(String?.self, context: .default)
            let modeError = try columns[20].decode(String?.self, context: .default)
            let report = status.flatMap { try? Wire.decode(AgentStatus.self, from: Data($0.utf8)) }
            let isolation = IsolationView(
                desired: IsolationWord(rawValue: desired) ?? .released, observed: observed.flatMap(IsolationWord.init),
                generation: generation, observedGeneration: observedGeneration,
                pendingSince: observedGeneration < generation ? Time.text(desiredAt) : nil)
            var view = HostView(
                id: id.uuidString.lowercased(), hostname: hostname, machineID: machineID,
                tags: (try? Wire.decode([String: String].self, from: Data(tags.utf8))) ?? [:],
                tagSources: (try? Wire.decode([String: String].self, from: Data(tagSources.utf8))) ?? [:], duplicateMachineID: duplicate,
                addresses: (try? Wire.decode([String].self, from: Data(addresses.utf8))) ?? [],
                agentVersion: version, enrolledAt: Time.text(enrolled), lastSeen: lastSeen.map(Time.text),
                connected: !revoked && lastSeen.map { now.timeIntervalSince($0) < Self.connectedWithin } == true, revoked: revoked,
                mode: report?.mode, ruleset: report?.rulesetVersion.map { RulesetInForce(version: $0, digest: report?.rulesetDigest) },
                lostEvents: report?.lostEvents ?? 0, guardRestores: report?.guardRestores ?? 0, guardEscalations: report?.guardEscalations ?? 0,
                logProblems: Int(problems), isolation: isolation,
                policy: Self.policy(assigned: assigned, desired: desiredDigest, report: report,
                                    connected: !revoked && lastSeen.map { now.timeIntervalSince($0) < Self.connectedWithin } == true,
                                    applied: observedGeneration >= generation, modeError: modeError))
            view.lastGuardRestore = report?.lastGuardRestore
            view.guardHint = GuardHint.text(recent: report?.recentGuardRestores)
            result.append(view)
        }
        return result
    }

    /// The policy a host's agent enforces, by its report.
    public static func inForce(mode: String?, digest: String?) -> String? { mode == "enforce" ? digest : nil }

    /// Whether what the host should run (its assignments), what its document asks and what it
    /// runs agree.
    public static func policy(assigned: EffectivePolicy?, desired: String?, report: AgentStatus?, connected: Bool, applied: Bool,
                              modeError: String? = nil) -> HostPolicyView {
        let inForce = Self.inForce(mode: report?.mode, digest: report?.rulesetDigest)
        let sync: String
        if !connected {
            sync = "offline"
        } else if modeError != nil {
            sync = "error"
        } else if applied && desired != nil && desired != inForce {
            // Applied, yet the kernel runs something else: changed on the host itself.
            sync = "drift"
        } else if (report?.recentGuardRestores ?? 0) > 0 {
            // Another program changed the tables lately; the guard put them back. Said before
            // `pending`: what happens to the kernel matters more than what waits for a rollout.
            sync = "drift"
        } else if assigned?.digest != desired {
            sync = "pending"
        } else if desired != nil && !applied {
            sync = "applying"
        } else {
            sync = "in_sync"
        }
        var view = HostPolicyView(assigned: assigned, desiredDigest: desired, inForceDigest: inForce, sync: sync)
        view.error = modeError
        return view
    }

    public func hosts(limit: Int) async throws -> [HostView] {
        try await views(try await client.query("SELECT \(unescaped: Self.columns) FROM hosts ORDER BY hostname, id LIMIT \(limit)", logger: logger))
    }

    public func hosts(ids: [UUID]) async throws -> [HostView] {
        guard !ids.isEmpty else { return [] }
        return try await views(try await client.query("""
            SELECT \(unescaped: Self.columns) FROM hosts WHERE id = ANY(\(ids)::uuid[]) ORDER BY hostname, id
            """, logger: logger))
    }

    public func page(ids: [UUID]?, order: HostOrder, offset: Int, limit: Int) async throws -> (items: [HostView], total: Int) {
        let all = ids == nil, ids = ids ?? []
        var total = 0
        for try await count in try await client.query("SELECT count(*) FROM hosts WHERE \(all) OR id = ANY(\(ids)::uuid[])",
                                                      logger: logger).decode(Int.self) { total = count }
        let items = try await views(try await client.query("""
            SELECT \(unescaped: Self.columns) FROM hosts WHERE \(all) OR id = ANY(\(ids)::uuid[])
            ORDER BY \(unescaped: order.sql) OFFSET \(offset) LIMIT \(limit)
            """, logger: logger))
        return (items, total)
    }

    public func mapHosts() async throws -> [MapHostRow] {
        var rows = try await mapCache.current(client: client, logger: logger, read: { [client, logger] horizon in
            var changes: [MapHostRow] = []
            for try await (id, hostname, mode, digest, assigned, keys, values, addresses) in try await client.query("""
                SELECT h.id, h.hostname, h.status->>'mode', h.status->>'ruleset_digest', h.assigned_policy->>'digest',
                       coalesce(t.keys, '{}'), coalesce(t.values, '{}'), ARRAY(SELECT jsonb_array_elements_text(h.addresses))
                FROM hosts h LEFT JOIN LATERAL (SELECT array_agg(key) AS keys, array_agg(value) AS values FROM jsonb_each_text(h.tags)) t ON true
                WHERE h.map_changed_txid >= \(horizon)::xid8
                """, logger: logger).decode((UUID, String, String?, String?, String?, [String], [String], [String]).self) {
                let inForce = Self.inForce(mode: mode, digest: digest)
                changes.append(MapHostRow(id: id, hostname: hostname, tags: Dictionary(zip(keys, values), uniquingKeysWith: { first, _ in first }),
                                          addresses: addresses, enforcing: mode == "enforce",
                                          waitingDigest: assigned != nil && assigned != inForce ? assigned : nil))
            }
            return changes
        }, apply: { $0.apply($1) }).state.rows
        let waiting = Set(rows.compactMap(\.waitingDigest))
        guard !waiting.isEmpty else { return rows }
        // A digest names one text for good: each is read once, not on every map of a rollout.
        var contents = policyTexts.kept.withLock { $0 }
        let missing = Array(waiting.subtracting(contents.keys))
        if !missing.isEmpty {
            for try await (digest, content) in try await client.query("""
                SELECT DISTINCT ON (assigned_policy->>'digest') assigned_policy->>'digest', assigned_policy->>'content'
                FROM hosts WHERE assigned_policy->>'digest' = ANY(\(missing)::text[])
                """, logger: logger).decode((String, String).self) { contents[digest] = content }
            policyTexts.kept.withLock { kept in for digest in missing { kept[digest] = contents[digest] } }
        }
        for index in rows.indices { rows[index].waitingPolicy = rows[index].waitingDigest.flatMap { contents[$0] } }
        return rows
    }

    public func marks() async throws -> [String: String] {
        var marks: [String: String] = [:]
        for try await (id, mark) in try await client.query("""
            SELECT id::text, concat_ws('|', desired->'isolation'->>'state', observed_state, status->>'mode',
                   revoked_at IS NULL AND last_seen > now() - make_interval(secs => \(Self.connectedWithin)), status->>'lost_events',
                   status->>'guard_restores', status->>'recent_guard_restores', log_problems, generation, observed_generation,
                   assigned_policy->>'digest', desired->'policy'->>'digest', status->>'ruleset_digest', desired->'mode'->>'intent_id')
            FROM hosts
            """, logger: logger).decode((String, String).self) { marks[id] = mark }
        return marks
    }

    public func directory() async throws -> [HostEntry] {
        var entries: [HostEntry] = []
        for try await (id, hostname, tags, management) in try await client.query("""
            SELECT id, hostname, tags::text, (status->'management')::text FROM hosts WHERE revoked_at IS NULL ORDER BY hostname, id
            """, logger: logger).decode((UUID, String, String, String?).self) {
            entries.append(HostEntry(id: id, hostname: hostname, tags: (try? Wire.decode([String: String].self, from: Data(tags.utf8))) ?? [:],
                                     management: management.flatMap { try? Wire.decode([ManagementChannel.WhitelistEntry].self, from: Data($0.utf8)) } ?? []))
        }
        return entries
    }

    public func changeTags(host: UUID, _ change: TagChange) async throws -> HostView? {
        let changed = try await client.transaction(logger: logger) { connection -> Bool in
            var found: (String, String)?
            for try await row in try await connection.query("SELECT tags::text, tag_sources::text FROM hosts WHERE id = \(host) FOR UPDATE",
                                                            logger: logger).decode((String, String).self) { found = row }
            guard let (tagsText, sourcesText) = found else { return false }
            var tags = (try? Wire.decode([String: String].self, from: Data(tagsText.utf8))) ?? [:]
            var sources = (try? Wire.decode([String: String].self, from: Data(sourcesText.utf8))) ?? [:]
            for key in change.unset {
                tags[key] = nil
                sources[key] = nil
            }
            for (key, value) in change.set {
                tags[key] = value
                sources[key] = "admin"
            }
            guard tags.count <= Limits.tags else { throw TooManyTags(count: tags.count) }
            try await connection.query("""
                UPDATE hosts SET tags = \(String(decoding: Wire.encode(tags), as: UTF8.self))::jsonb,
                  tag_sources = \(String(decoding: Wire.encode(sources), as: UTF8.self))::jsonb WHERE id = \(host)
                """, logger: logger)
            return true
        }
        return changed ? try await self.host(host) : nil
    }

    public func host(_ id: UUID) async throws -> HostView? {
        try await views(try await client.query("SELECT \(unescaped: Self.columns) FROM hosts WHERE id = \(id)", logger: logger)).first
    }

    public func counts() async throws -> (enrolled: Int, connected: Int) {
        let rows = try await client.query("""
            SELECT count(*) FILTER (WHERE revoked_at IS NULL),
                   count(*) FILTER (WHERE revoked_at IS NULL AND last_seen > now() - make_interval(secs => \(Self.connectedWithin)))
            FROM hosts
            """, logger: logger)
        for try await (enrolled, connected) in rows.decode((Int64, Int64).self) { return (Int(enrolled), Int(connected)) }
        return (0, 0)
    }

    public func seen(_ ids: [UUID]) async throws {
        guard !ids.isEmpty else { return }
        try await client.query("UPDATE hosts SET last_seen = now() WHERE id = ANY(\(ids)::uuid[])", logger: logger)
    }
}
