import CordonCore
import CordonServer
import CordonWire
import Foundation
import Synchronization

/// The server's tables in memory, for the route tests: each store below is the PostgreSQL one's
/// semantics over these rows, one lock standing for every row lock and transaction. What they
/// cannot stand for (SQL itself, concurrency across replicas, LISTEN/NOTIFY, outages) stays with
/// the namespace tests on a real PostgreSQL.
final class MemoryDatabase: Sendable {
    struct TokenRow {
        var id: UUID, name: String, role: Role, hash: String, revoked: Bool
    }

    struct SecretRow {
        var hash: String, tags: [String: String], expires: Date?, usesLeft: Int?, hostTags: Bool, extraWhitelist: [String], revoked: Bool
    }

    struct HostRow {
        var id: UUID, hostname: String, machineID: String, addresses: [String], agentVersion: String
        var tags: [String: String], tagSources: [String: String], credentialHash: String
        var enrolledAt = Date(), lastSeen: Date? = nil, revoked = false, status: AgentStatus? = nil
        var desired: DesiredState, desiredAt = Date(), observed: IsolationWord? = nil, observedGeneration: Int64 = 0
        var logHead: Int64 = 0, logProblems = 0
        var assignedPolicy: EffectivePolicy? = nil
    }

    struct IntentRow {
        var id: UUID, host: UUID, origin: DesiredState.Origin, generation: Int64, state: IsolationWord, previous: IsolationWord
        var status: IntentStatus, requestedBy: String, tokenID: UUID?, requestedAt = Date(), completedAt: Date?
        var reason: String, externalID: String?, idempotencyKey: String?, error: String?, localSequence: Int64?

        var view: IntentView {
            IntentView(id: id.uuidString.lowercased(), hostID: host.uuidString.lowercased(), kind: .isolation, origin: origin, state: state.rawValue,
                       generation: generation, status: status, requestedBy: requestedBy, requestedAt: MemoryDatabase.text(requestedAt),
                       completedAt: completedAt.map(MemoryDatabase.text), reason: reason, externalID: externalID, error: error)
        }
    }

    struct Tables {
        var tokens: [TokenRow] = []
        var secrets: [SecretRow] = []
        var hosts: [UUID: HostRow] = [:]
        /// In insertion order.
        var intents: [IntentRow] = []
        var log: [UUID: [Int64: Decision]] = [:]
        var logProblems: [UUID: [String]] = [:]
        var flows: [UUID: [String: FlowRecord]] = [:]
        var flowHeads: [UUID: Int64] = [:]
        var audit: [AuditEntry] = []
        var versions: [RulesetVersionView] = []
        var assignments: [StoredAssignment] = []
        /// Intents of kind `mode` (a rollout's steps), apart from the isolation ones.
        var modeIntents: [ModeIntentRow] = []
        var rollouts: [UUID: Rollout] = [:]
        /// By the secret's hash.
        var sessions: [String: SessionRow] = [:]
    }

    struct SessionRow {
        var tokenID: UUID, csrf: String, expires: Date
    }

    struct ModeIntentRow {
        var id: UUID, host: UUID, generation: Int64, state: ModeWord, status: IntentStatus, error: String?, rolledBack: Bool?
    }

    let tables = Mutex(Tables())
    /// The clock by which a host is connected (seen within 40 s): stopped unless a test moves it,
    /// because under `swift test` the namespace suites can hold the concurrency pool for minutes
    /// between a report and the request that looks at it.
    let clock = Mutex(Date())
    func now() -> Date { clock.withLock { $0 } }
    func advance(_ seconds: Double) { clock.withLock { $0 = $0.addingTimeInterval(seconds) } }
    /// NOTIFY's stand-in: told a host's desired state changed, after the change is visible.
    let changed: @Sendable (UUID) -> Void

    init(changed: @escaping @Sendable (UUID) -> Void = { _ in }) {
        self.changed = changed
    }

    static func text(_ date: Date) -> String { TimeText.rfc3339(Int64(date.timeIntervalSince1970)) }

    func stores() -> Stores {
        Stores(tokens: MemoryTokenStore(db: self), enrollment: MemoryEnrollmentStore(db: self), hosts: MemoryHostStore(db: self),
               desired: MemoryDesiredStateStore(db: self), log: MemoryLogStore(db: self), flows: MemoryFleetFlowStore(db: self),
               audit: MemoryAuditStore(db: self), policy: MemoryPolicyStore(db: self), rollouts: MemoryRolloutStore(db: self),
               sessions: MemorySessionStore(db: self))
    }
}

struct MemoryTokenStore: TokenStore {
    let db: MemoryDatabase

    func create(name: String, role: Role) async throws -> (id: UUID, token: String) {
        let token = Credential.generate(.apiToken), id = UUID()
        db.tables.withLock { $0.tokens.append(.init(id: id, name: name, role: role, hash: Credential.hash(token), revoked: false)) }
        return (id, token)
    }

    func revoke(_ nameOrID: String) async throws -> Int {
        db.tables.withLock { t in
            var count = 0
            for index in t.tokens.indices where !t.tokens[index].revoked
                && (UUID(uuidString: nameOrID).map { t.tokens[index].id == $0 } ?? (t.tokens[index].name == nameOrID)) {
                t.tokens[index].revoked = true
                count += 1
            }
            return count
        }
    }

    func authenticate(token: String) async throws -> Principal? {
        let hash = Credential.hash(token)
        return db.tables.withLock { t -> Principal? in
            switch Credential.kind(of: token) {
            case .apiToken:
                return t.tokens.first { $0.hash == hash && !$0.revoked }.map { .token(id: $0.id, name: $0.name, role: $0.role) }
            case .host:
                return t.hosts.values.first { $0.credentialHash == hash && !$0.revoked }.map { .host(id: $0.id) }
            case .enrollSecret, .session, .csrf, nil:
                return nil
            }
        }
    }

    func isRevokedHost(token: String) async throws -> Bool {
        guard Credential.kind(of: token) == .host else { return false }
        let hash = Credential.hash(token)
        return db.tables.withLock { t in t.hosts.values.contains { $0.credentialHash == hash && $0.revoked } }
    }
}

struct MemorySessionStore: SessionStore {
    let db: MemoryDatabase

    func create(tokenID: UUID, lifetime: TimeInterval) async throws -> (secret: String, session: ConsoleSession)? {
        let secret = Credential.generate(.session), csrf = Credential.generate(.csrf), expires = Date().addingTimeInterval(lifetime)
        return db.tables.withLock { t in
            guard let token = t.tokens.first(where: { $0.id == tokenID && !$0.revoked }) else { return nil }
            t.sessions[Credential.hash(secret)] = .init(tokenID: tokenID, csrf: csrf, expires: expires)
            return (secret, ConsoleSession(principal: .token(id: token.id, name: token.name, role: token.role), csrf: csrf, expiresAt: expires))
        }
    }

    func session(secret: String) async throws -> ConsoleSession? {
        db.tables.withLock { t in
            guard let row = t.sessions[Credential.hash(secret)], row.expires > Date(),
                  let token = t.tokens.first(where: { $0.id == row.tokenID && !$0.revoked }) else { return nil }
            return ConsoleSession(principal: .token(id: token.id, name: token.name, role: token.role), csrf: row.csrf, expiresAt: row.expires)
        }
    }

    func delete(secret: String) async throws {
        _ = db.tables.withLock { $0.sessions.removeValue(forKey: Credential.hash(secret)) }
    }
}

struct MemoryEnrollmentStore: EnrollmentStore {
    let db: MemoryDatabase

    func createSecret(tags: [String: String], ttlSeconds: Int64?, uses: Int?, hostTags: Bool, extraWhitelist: [String]) async throws -> String {
        let secret = Credential.generate(.enrollSecret)
        db.tables.withLock {
            $0.secrets.append(.init(hash: Credential.hash(secret), tags: tags, expires: ttlSeconds.map { Date().addingTimeInterval(Double($0)) },
                                    usesLeft: uses, hostTags: hostTags, extraWhitelist: extraWhitelist, revoked: false))
        }
        return secret
    }

    func enroll(_ request: EnrollRequest) async throws -> EnrollResponse? {
        let hash = Credential.hash(request.secret), now = Date()
        return db.tables.withLock { t -> EnrollResponse? in
            guard let index = t.secrets.firstIndex(where: {
                $0.hash == hash && !$0.revoked && ($0.expires.map { $0 > now } ?? true) && ($0.usesLeft.map { $0 > 0 } ?? true)
            }) else { return nil }
            let secret = t.secrets[index]
            if let uses = secret.usesLeft { t.secrets[index].usesLeft = uses - 1 }
            var tags = secret.hostTags ? request.tags : [:]
            var sources = tags.mapValues { _ in "host" }
            for (key, value) in secret.tags {
                tags[key] = value
                sources[key] = "secret"
            }
            let id = UUID(), credential = Credential.generate(.host)
            var desired = DesiredState.initial
            desired.isolation.extraWhitelist = secret.extraWhitelist
            t.hosts[id] = .init(id: id, hostname: request.hostname, machineID: request.machineID, addresses: request.addresses,
                                agentVersion: request.agentVersion, tags: tags, tagSources: sources, credentialHash: Credential.hash(credential),
                                desired: desired)
            return EnrollResponse(hostID: id.uuidString.lowercased(), credential: credential)
        }
    }

    func revokeHost(_ id: UUID) async throws -> Bool {
        db.tables.withLock { t in
            guard t.hosts[id] != nil else { return false }
            t.hosts[id]!.revoked = true
            return true
        }
    }
}

struct MemoryDesiredStateStore: DesiredStateStore {
    let db: MemoryDatabase

    /// The document with its isolation replaced, at the next generation; the rest stays.
    private static func isolating(_ row: MemoryDatabase.HostRow, _ state: IsolationWord, origin: DesiredState.Origin, intent: UUID?,
                                  reason: String, by name: String) -> DesiredState {
        var document = row.desired
        document.generation += 1
        document.isolation = DesiredState.Isolation(state: state, origin: origin, intentID: intent?.uuidString.lowercased(), reason: reason,
                                                    requestedBy: name, extraWhitelist: row.desired.isolation.extraWhitelist)
        return document
    }

    /// Writes the document; the pending intent it replaces is superseded.
    private static func setDesired(_ t: inout MemoryDatabase.Tables, host: UUID, _ document: DesiredState, supersededBecause why: String) {
        for index in t.intents.indices where t.intents[index].host == host && t.intents[index].status == .pending {
            t.intents[index].status = .superseded
            t.intents[index].completedAt = Date()
            t.intents[index].error = why
        }
        t.hosts[host]!.desired = document
        t.hosts[host]!.desiredAt = Date()
    }

    func request(host: UUID, _ request: IsolationRequest, by name: String, tokenID: UUID?, idempotencyKey: String?) async throws -> IntentAccepted {
        let (accepted, changed) = try db.tables.withLock { t throws -> (IntentAccepted, Bool) in
            guard let row = t.hosts[host] else { throw IsolationRefusal.noHost }
            // SQL's `token_id = NULL` matches nothing: without a token there is no replay.
            if let idempotencyKey, let tokenID, let before = t.intents.first(where: { $0.tokenID == tokenID && $0.idempotencyKey == idempotencyKey }) {
                guard before.host == host, before.state == request.state, before.reason == request.reason, before.externalID == request.externalID else {
                    throw IsolationRefusal.keyReused
                }
                return (IntentAccepted(intentID: before.id.uuidString.lowercased(), generation: before.generation, status: before.status), false)
            }
            guard !row.revoked else { throw IsolationRefusal.revoked }
            let id = UUID()
            let current = row.desired.isolation.state
            if current == request.state, row.observed == request.state, row.observedGeneration >= row.desired.generation {
                t.intents.append(.init(id: id, host: host, origin: .server, generation: row.desired.generation, state: request.state, previous: current,
                                       status: .succeeded, requestedBy: name, tokenID: tokenID, completedAt: Date(), reason: request.reason,
                                       externalID: request.externalID, idempotencyKey: idempotencyKey, error: nil, localSequence: nil))
                return (IntentAccepted(intentID: id.uuidString.lowercased(), generation: row.desired.generation, status: .succeeded), false)
            }
            let document = Self.isolating(row, request.state, origin: .server, intent: id, reason: request.reason, by: name)
            Self.setDesired(&t, host: host, document,
                            supersededBecause: "superseded by intent \(id.uuidString.lowercased()) (\(request.state.rawValue), by \(name))")
            t.intents.append(.init(id: id, host: host, origin: .server, generation: document.generation, state: request.state, previous: current,
                                   status: .pending, requestedBy: name, tokenID: tokenID, completedAt: nil, reason: request.reason,
                                   externalID: request.externalID, idempotencyKey: idempotencyKey, error: nil, localSequence: nil))
            return (IntentAccepted(intentID: id.uuidString.lowercased(), generation: document.generation, status: .pending), true)
        }
        if changed { db.changed(host) }
        return accepted
    }

    func cancel(intent id: UUID, by name: String) async throws -> IntentView {
        let view = try db.tables.withLock { t throws -> IntentView in
            guard let index = t.intents.firstIndex(where: { $0.id == id }) else { throw IsolationRefusal.noIntent }
            let intent = t.intents[index]
            guard let row = t.hosts[intent.host] else { throw IsolationRefusal.noHost }
            guard intent.status == .pending else { throw IsolationRefusal.notPending(intent.status) }
            guard row.desired.isolation.intentID == id.uuidString.lowercased() else { throw IsolationRefusal.notPending(.superseded) }
            Self.setDesired(&t, host: intent.host,
                            Self.isolating(row, intent.previous, origin: .server, intent: nil, reason: "intent \(id.uuidString.lowercased()) canceled", by: name),
                            supersededBecause: "canceled by \(name)")
            return t.intents[index].view
        }
        db.changed(UUID(uuidString: view.hostID)!)
        return view
    }

    func desired(host: UUID) async throws -> DesiredState? {
        db.tables.withLock { $0.hosts[host]?.desired }
    }

    func observe(host: UUID, report: AgentReport) async throws -> DesiredState {
        let (document, changed) = try db.tables.withLock { t throws -> (DesiredState, Bool) in
            guard let row = t.hosts[host] else { throw IsolationRefusal.noHost }
            var observedGeneration = min(max(row.observedGeneration, report.appliedGeneration), row.desired.generation)
            var document = row.desired, changed = false
            if let local = report.local, !Self.isKnown(local, host: host, in: t) {
                let id = UUID()
                document = Self.isolating(row, local.state, origin: .local, intent: id, reason: local.reason, by: local.operator)
                Self.setDesired(&t, host: host, document,
                                supersededBecause: "superseded by a local \(local.state == .isolated ? "isolation" : "release") on the host by \(local.operator)")
                t.intents.append(.init(id: id, host: host, origin: .local, generation: document.generation, state: local.state,
                                       previous: row.desired.isolation.state, status: .succeeded, requestedBy: local.operator, tokenID: nil,
                                       requestedAt: Date(timeIntervalSince1970: Double(local.at)), completedAt: Date(), reason: local.reason,
                                       externalID: nil, idempotencyKey: nil, error: nil, localSequence: local.sequence))
                observedGeneration = document.generation
                changed = true
            }
            for index in t.intents.indices where t.intents[index].host == host && t.intents[index].status == .pending {
                if let applied = report.applied, t.intents[index].generation == applied.generation {
                    t.intents[index].status = applied.ok ? .succeeded : .failed
                    t.intents[index].error = applied.error
                    t.intents[index].completedAt = Date()
                } else if t.intents[index].generation <= observedGeneration {
                    // Applied, but the result was lost with a connection: settled from what the host observes.
                    let held = t.intents[index].state == report.observed
                    t.intents[index].status = held ? .succeeded : .failed
                    t.intents[index].error = held ? nil : "the host reports " + report.observed.rawValue
                    t.intents[index].completedAt = Date()
                }
            }
            for index in t.modeIntents.indices where t.modeIntents[index].host == host && t.modeIntents[index].status == .pending {
                if let applied = report.applied, t.modeIntents[index].generation == applied.generation {
                    t.modeIntents[index].status = applied.ok ? .succeeded : .failed
                    t.modeIntents[index].error = applied.error
                    t.modeIntents[index].rolledBack = applied.rolledBack
                } else if t.modeIntents[index].generation <= observedGeneration {
                    let held = t.modeIntents[index].state.rawValue == report.status.mode
                    t.modeIntents[index].status = held ? .succeeded : .failed
                    t.modeIntents[index].error = held ? nil : "the host reports mode " + report.status.mode
                }
            }
            t.hosts[host]!.observed = report.observed
            t.hosts[host]!.observedGeneration = observedGeneration
            t.hosts[host]!.lastSeen = db.now()
            t.hosts[host]!.status = report.status
            t.hosts[host]!.addresses = report.status.addresses
            t.hosts[host]!.agentVersion = report.status.agentVersion
            return (document, changed)
        }
        if changed { db.changed(host) }
        return document
    }

    func setMode(host: UUID, _ change: ModeChange, rollout: UUID, by name: String, reason: String) async throws -> (generation: Int64, previous: Rollout.Previous) {
        let result = try db.tables.withLock { t throws -> (Int64, Rollout.Previous) in
            guard let row = t.hosts[host] else { throw IsolationRefusal.noHost }
            guard !row.revoked else { throw IsolationRefusal.revoked }
            let id = UUID()
            guard let (mode, policy) = change.apply(to: row.desired, assigned: row.assignedPolicy, intent: id) else { throw ModeRefusal.noPolicy }
            var document = row.desired
            document.generation += 1
            document.mode = mode
            document.policy = policy
            for index in t.modeIntents.indices where t.modeIntents[index].host == host && t.modeIntents[index].status == .pending {
                t.modeIntents[index].status = .superseded
            }
            t.hosts[host]!.desired = document
            t.hosts[host]!.desiredAt = Date()
            t.modeIntents.append(.init(id: id, host: host, generation: document.generation, state: mode.mode, status: .pending, error: nil, rolledBack: nil))
            var previous = Rollout.Previous(mode: row.desired.mode, policy: row.desired.policy)
            if case .rollout = change, let index = t.rollouts[rollout]?.hosts.firstIndex(where: { $0.id == host }) {
                if let kept = t.rollouts[rollout]!.hosts[index].previous { previous = kept }
                t.rollouts[rollout]!.hosts[index].previous = previous
                t.rollouts[rollout]!.hosts[index].generation = document.generation
            }
            return (document.generation, previous)
        }
        db.changed(host)
        return result
    }

    /// A local change reported before: by its decision-log sequence, or (older agents) its time and operator.
    private static func isKnown(_ local: LocalIsolationChange, host: UUID, in t: MemoryDatabase.Tables) -> Bool {
        t.intents.contains { intent in
            intent.host == host && intent.state == local.state
                && ((local.sequence != nil && intent.localSequence == local.sequence)
                    || (local.sequence == nil && intent.origin == .local && intent.requestedBy == local.operator
                        && intent.requestedAt == Date(timeIntervalSince1970: Double(local.at))))
        }
    }

    func intent(_ id: UUID) async throws -> IntentView? {
        db.tables.withLock { t in t.intents.first { $0.id == id }?.view }
    }

    func intents(host: UUID?, status: IntentStatus?, limit: Int) async throws -> [IntentView] {
        db.tables.withLock { t in
            // Newest first, as `ORDER BY requested_at DESC, generation DESC`; ties in insertion order, newest first.
            Array(t.intents.enumerated()
                .filter { (host == nil || $0.element.host == host) && (status == nil || $0.element.status == status) }
                .sorted { ($0.element.requestedAt, $0.element.generation, $0.offset) > ($1.element.requestedAt, $1.element.generation, $1.offset) }
                .prefix(limit).map(\.element.view))
        }
    }

    func intentCounts() async throws -> [IntentStatus: Int] {
        db.tables.withLock { t in t.intents.reduce(into: [:]) { $0[$1.status, default: 0] += 1 } }
    }
}

struct MemoryLogStore: LogStore {
    let db: MemoryDatabase

    func append(host: UUID, entries: [Decision]) async throws -> Int64 {
        db.tables.withLock { t in
            var head = t.hosts[host]?.logHead ?? 0
            let batch = entries.sorted { $0.sequence < $1.sequence }
            guard let first = batch.first, let last = batch.last else { return head }
            var stored = t.log[host, default: [:]]
            var previous = stored.values.filter { $0.sequence < first.sequence }.max { $0.sequence < $1.sequence }
            var problems: [String] = []
            for entry in batch {
                if let before = stored[entry.sequence] {
                    // Sent again: stored once; a different entry under the same number is a rewritten history.
                    if before.hash != entry.hash { problems.append("entry \(entry.sequence) differs from the one received before") }
                } else {
                    problems += Decision.verifyChain([entry], after: previous)
                    stored[entry.sequence] = entry
                }
                previous = entry
            }
            t.log[host] = stored
            t.logProblems[host, default: []] += problems
            head = max(head, last.sequence)
            t.hosts[host]?.logHead = head
            t.hosts[host]?.logProblems += problems.count
            return head
        }
    }

    func log(host: UUID) async throws -> HostLog {
        let (entries, stored) = db.tables.withLock { t in
            ((t.log[host] ?? [:]).values.sorted { $0.sequence < $1.sequence }, t.logProblems[host] ?? [])
        }
        var problems = Decision.verifyChain(entries)
        for problem in stored where !problems.contains(problem) { problems.append(problem) }
        return HostLog(hostID: host.uuidString.lowercased(),
                       verification: HostLog.Verification(intact: problems.isEmpty, entries: entries.count, problems: problems), entries: entries)
    }
}

struct MemoryFleetFlowStore: FleetFlowStore {
    let db: MemoryDatabase

    /// The table's key: one row per flow.
    static func key(_ f: FlowRecord) -> String {
        func text<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "-" }
        return [f.direction.rawValue, f.protocol, f.localAddress, text(f.localPort), f.remoteAddress, text(f.remotePort),
                text(f.icmpType), text(f.icmpCode), f.verdict.rawValue].joined(separator: "|")
    }

    /// A row replaces the stored one only if it is not older.
    private static func newer(_ a: FlowRecord, than b: FlowRecord) -> Bool {
        (a.lastSeen, a.connections, a.packets, a.bytes) >= (b.lastSeen, b.connections, b.packets, b.bytes)
    }

    func upsert(host: UUID, flows: [FlowRecord]) async throws {
        db.tables.withLock { t in
            for flow in flows {
                let key = Self.key(flow)
                if let stored = t.flows[host]?[key], !Self.newer(flow, than: stored) { continue }
                t.flows[host, default: [:]][key] = flow
            }
        }
    }

    func acknowledge(host: UUID, after: Int64, through: Int64) async throws -> Int64? {
        db.tables.withLock { t in
            let head = t.flowHeads[host]
            if head == nil || after <= head! { t.flowHeads[host] = max(head ?? 0, through) }
            return t.flowHeads[host]
        }
    }

    func flows(host: UUID) async throws -> [FlowRecord] {
        db.tables.withLock { t in (t.flows[host] ?? [:]).sorted { $0.key < $1.key }.map(\.value) }
    }

    func rejected(hosts: [UUID], since: String) async throws -> [UUID: [FlowRecord]] {
        db.tables.withLock { t in
            var result: [UUID: [FlowRecord]] = [:]
            for host in hosts {
                let found = (t.flows[host] ?? [:]).values.filter { $0.verdict == .rejected && $0.lastSeen >= since }
                if !found.isEmpty { result[host] = found }
            }
            return result
        }
    }
}

struct MemoryRolloutStore: RolloutStore {
    let db: MemoryDatabase
    /// The rollouts' lock; PostgreSQL's advisory lock in production.
    static let lock = Mutex<Set<ObjectIdentifier>>([])

    func create(_ rollout: Rollout) async throws { db.tables.withLock { $0.rollouts[rollout.id] = rollout } }

    /// Never: the memory stores are never restored from a backup (the re-base is PostgreSQL's,
    /// tested in `RestoreTests`).
    func restoredSince(_ rollout: UUID) async throws -> String? { nil }

    func rollout(_ id: UUID) async throws -> Rollout? {
        db.tables.withLock { t in
            t.rollouts[id].map { r in
                var r = r
                for index in r.hosts.indices { r.hosts[index].hostname = t.hosts[r.hosts[index].id]?.hostname ?? r.hosts[index].hostname }
                return r
            }
        }
    }

    func rollouts(limit: Int) async throws -> [Rollout] {
        db.tables.withLock { Array($0.rollouts.values.sorted { $0.createdAt > $1.createdAt }.prefix(limit)) }
    }

    func running() async throws -> [UUID] {
        db.tables.withLock { $0.rollouts.values.filter { $0.state == .running }.sorted { $0.createdAt < $1.createdAt }.map(\.id) }
    }

    func save(_ rollout: Rollout) async throws { db.tables.withLock { $0.rollouts[rollout.id] = rollout } }

    func exclusive<T: Sendable>(wait: Bool, _ body: @Sendable () async throws -> T) async throws -> T? {
        let key = ObjectIdentifier(db)
        while !Self.lock.withLock({ $0.insert(key).inserted }) {
            guard wait else { return nil }
            try await Task.sleep(for: .milliseconds(5))
        }
        defer { _ = Self.lock.withLock { $0.remove(key) } }
        return try await body()
    }

    func observe(hosts: [UUID], generations: [UUID: Int64], mode: ModeWord) async throws -> [UUID: RolloutObservation] {
        db.tables.withLock { t in
            var result: [UUID: RolloutObservation] = [:]
            for id in hosts {
                guard let row = t.hosts[id] else { continue }
                let connected = !row.revoked && row.lastSeen.map { db.now().timeIntervalSince($0) < PostgresHostStore.connectedWithin } == true
                let inSync = PostgresRolloutStore.inSync(mode: mode, desiredMode: row.desired.mode?.mode.rawValue, desiredDigest: row.desired.policy?.digest,
                                                         assigned: row.assignedPolicy?.digest, reportedMode: row.status?.mode,
                                                         reportedDigest: row.status?.rulesetDigest, applied: row.observedGeneration >= row.desired.generation)
                var seen = RolloutObservation(connected: connected, inSync: inSync, noPolicy: row.assignedPolicy == nil)
                if let generation = generations[id],
                   let intent = t.modeIntents.first(where: { $0.host == id && $0.generation == generation && [.succeeded, .failed].contains($0.status) }) {
                    seen.result = AppliedGeneration(generation: generation, ok: intent.status == .succeeded, error: intent.error, rolledBack: intent.rolledBack)
                }
                result[id] = seen
            }
            return result
        }
    }
}

struct MemoryAuditStore: AuditStore {
    let db: MemoryDatabase

    func record(actor: String, role: String?, action: String, target: String?, detail: String, remote: String?) async throws {
        db.tables.withLock { t in
            t.audit.append(AuditEntry(id: Int64(t.audit.count + 1), at: MemoryDatabase.text(Date()), actor: actor, role: role, action: action,
                                      target: target, detail: detail, remote: remote))
        }
    }

    func entries(limit: Int) async throws -> [AuditEntry] {
        db.tables.withLock { t in Array(t.audit.reversed().prefix(limit)) }
    }
}
