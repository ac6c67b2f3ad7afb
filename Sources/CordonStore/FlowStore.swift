#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import Foundation
import GRDB

/// Errors of the store, with the path so the operator knows which file is meant.
public enum StoreError: Error, CustomStringConvertible {
    case missing(path: String)
    case empty(path: String)
    case corrupt(path: String, detail: String)

    public var description: String {
        switch self {
        case .missing(let path): return "no Cordon database at \(path) (has `cordon agent` run with this --db?)"
        case .empty(let path): return "database \(path) is an empty file, not a Cordon database (move it away to start afresh)"
        case .corrupt(let path, let detail): return "database \(path): \(detail)"
        }
    }
}

/// The SQLite file: flow aggregates and the agent's persisted state.
///
/// WAL mode, so `cordon flows` reads while the agent writes. Every change of the schema goes
/// through a named migration; uniqueness of a flow is the database's job, not the caller's.
public final class FlowStore: Sendable {
    public let path: String
    let pool: DatabasePool
    /// Why this store was opened only to read (see `readingIfNotWriting`); nil when opened to write.
    public let unwritable: String?

    /// Opens (and creates or migrates) the database for the agent.
    public init(path: String) throws {
        self.path = path
        unwritable = nil
        if let size = Self.size(path), size == 0 { throw StoreError.empty(path: path) }
        pool = try Self.open(path, readonly: false)
        try Self.refuseNewer(pool, path: path)
        try Self.describing(path) { try Self.migrator.migrate(pool) }
        // Readers opened before the migration cache the old schema's statements.
        pool.invalidateReadOnlyConnections()
    }

    /// Opens an existing database to change it (the CLI's approve, or isolation without an
    /// agent); never creates one, so a mistyped path is an error and not an empty database whose
    /// defaults (no collectors) would be acted on. Migrates only when its schema is older.
    public init(existing path: String) throws {
        self.path = path
        unwritable = nil
        let (pool, current) = try Self.openExisting(path, readonly: false)
        self.pool = pool
        guard !current else { return }
        let applied = try Self.describing(path) { try pool.read { try Self.migrator.appliedIdentifiers($0) } }
        guard !applied.isEmpty else { throw StoreError.corrupt(path: path, detail: "not a Cordon database (no schema)") }
        try Self.describing(path) { try Self.migrator.migrate(pool) }
        pool.invalidateReadOnlyConnections()
    }

    /// Opens an existing database for reading only (the CLI); never creates one.
    public convenience init(readingFrom path: String) throws {
        try self.init(reading: path, at: path, unwritable: nil)
    }

    /// `location`: the file SQLite opens (`path`, or a URI naming it).
    private init(reading path: String, at location: String, unwritable: String?) throws {
        self.path = path
        self.unwritable = unwritable
        let (pool, current) = try Self.openExisting(path, at: location, readonly: true)
        self.pool = pool
        guard current else { throw StoreError.corrupt(path: path, detail: "schema is older than this cordon: start the agent once to migrate it") }
    }

    /// Opens an existing database to change it when it can, else only to read it (`unwritable`
    /// says why): isolation without an agent reads its management channel here, and a host must
    /// not be able to make itself impossible to isolate by filling its disk. SQLite opens a WAL
    /// database, even read-only, only after making its shared-memory file (`-shm`), whose first
    /// page a full filesystem refuses; `immutable=1` reads the main file without it, and without
    /// what a `-wal` left by an agent that did not stop cleanly holds (said in `unwritable`).
    /// A file that is missing, empty or of a newer cordon is refused as by `init(existing:)`.
    public static func readingIfNotWriting(existing path: String) throws -> FlowStore {
        let refusal: any Error
        do { return try FlowStore(existing: path) } catch let error as StoreError {
            switch error {
            case .missing, .empty: throw error
            case .corrupt: refusal = error
            }
        }
        var why = filesystemProblem(beside: path) ?? "\(refusal)"
        if let store = try? FlowStore(reading: path, at: path, unwritable: why) { return store }
        if let size = size(path + "-wal"), size > 0 {
            why += "; read without its -wal (\(size) bytes), so what the agent wrote last may be missing"
        }
        guard let store = try? FlowStore(reading: path, at: immutableURI(path), unwritable: why) else { throw refusal }
        return store
    }

    /// SQLite's URI for reading `path` as a file nothing changes: no locks, no `-shm`, no `-wal`.
    /// (SQLite interprets `file:` names when built with URI filenames, as Debian's is; elsewhere
    /// this open fails, and the first refusal stands.)
    private static func immutableURI(_ path: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        return "file:\(path.addingPercentEncoding(withAllowedCharacters: allowed) ?? path)?immutable=1"
    }

    /// Why the filesystem holding `path` cannot take a write, in its own words: mounted read-only,
    /// or too full for SQLite's shared-memory file (32 KiB) and a page; nil when it says neither.
    /// SQLite's own error on a full disk is often just "disk I/O error".
    public static func filesystemProblem(beside path: String) -> String? {
        var info = statvfs()
        let directory = (path as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return nil }
        if info.f_flag & UInt(ST_RDONLY) != 0 { return String(cString: strerror(EROFS)) }
        // Root may use the blocks reserved for it, and root is who isolates.
        let free = UInt64(geteuid() == 0 ? info.f_bfree : info.f_bavail) * UInt64(info.f_frsize)
        return free < 36 * 1024 ? String(cString: strerror(ENOSPC)) : nil
    }

    /// A file that exists, is not empty and was not written by a newer cordon; whether its
    /// schema is this version's.
    private static func openExisting(_ path: String, at location: String? = nil, readonly: Bool) throws -> (DatabasePool, current: Bool) {
        guard let size = size(path) else { throw StoreError.missing(path: path) }
        guard size > 0 else { throw StoreError.empty(path: path) }
        let pool = try open(location ?? path, readonly: readonly, naming: path)
        try refuseNewer(pool, path: path)
        return (pool, try describing(path) { try pool.read { try migrator.hasCompletedMigrations($0) } })
    }

    /// The file's size, nil when there is none.
    private static func size(_ path: String) -> Int? {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : nil
    }

    /// `naming`: the path errors name, when `location` is a URI.
    private static func open(_ location: String, readonly: Bool, naming path: String? = nil) throws -> DatabasePool {
        var config = Configuration()
        config.readonly = readonly
        config.busyMode = .timeout(5)
        if !readonly {
            config.prepareDatabase { db in
                // A flush is one transaction every few seconds; FULL fsyncs each one, which is cheap at
                // that rate and keeps recorded flows across a power loss.
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
        }
        return try describing(path ?? location) { try DatabasePool(path: location, configuration: config) }
    }

    /// A schema written by a later cordon (a migration this one does not know) is refused: this
    /// version cannot know what the newer one stored, and a downgrade must not guess.
    private static func refuseNewer(_ pool: DatabasePool, path: String) throws {
        let unknown = try describing(path) { try pool.read { try migrator.hasBeenSuperseded($0) } }
        guard !unknown else {
            throw StoreError.corrupt(path: path, detail: "written by a newer cordon (its schema has migrations this version does not know); upgrade cordon, or restore a backup made by this version")
        }
    }

    /// Runs a database call; an SQLite error names the file it happened in.
    static func describing<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as DatabaseError {
            throw StoreError.corrupt(path: path, detail: "SQLite error \(error.resultCode.rawValue): \(error.message ?? "\(error.resultCode)")")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-flows") { db in
            try db.execute(sql: """
                CREATE TABLE flows (
                  id INTEGER PRIMARY KEY,
                  direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound', 'forward')),
                  family TEXT NOT NULL CHECK (family IN ('ipv4', 'ipv6')),
                  protocol INTEGER NOT NULL CHECK (protocol BETWEEN 0 AND 255),
                  local_address TEXT NOT NULL,
                  -- inbound: local service port; outbound/forward: remote port; ICMP: type << 8 | code
                  service INTEGER NOT NULL CHECK (service BETWEEN 0 AND 65535),
                  remote_address TEXT NOT NULL,
                  remote_prefix INTEGER NOT NULL CHECK (remote_prefix BETWEEN 0 AND 128),
                  connections INTEGER NOT NULL CHECK (connections >= 0),
                  packets INTEGER NOT NULL DEFAULT 0,
                  bytes INTEGER NOT NULL DEFAULT 0,
                  first_seen INTEGER NOT NULL,
                  last_seen INTEGER NOT NULL CHECK (last_seen >= first_seen),
                  UNIQUE (direction, protocol, local_address, service, remote_address, remote_prefix)
                );
                CREATE INDEX flows_last_seen ON flows (last_seen);
                CREATE TABLE agent_state (
                  name TEXT PRIMARY KEY,
                  value TEXT NOT NULL,
                  updated_at INTEGER NOT NULL
                );
                """)
        }
        registerDecisionMigrations(&migrator)
        migrator.registerMigration("v3-flow-verdict") { db in
            // The verdict joins the flow's identity; SQLite cannot change a UNIQUE constraint in
            // place, so the table is rebuilt (rows keep their ids; all were allowed until now).
            try db.execute(sql: """
                CREATE TABLE flows_v3 (
                  id INTEGER PRIMARY KEY,
                  direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound', 'forward')),
                  family TEXT NOT NULL CHECK (family IN ('ipv4', 'ipv6')),
                  protocol INTEGER NOT NULL CHECK (protocol BETWEEN 0 AND 255),
                  local_address TEXT NOT NULL,
                  -- inbound: local service port; outbound/forward: remote port; ICMP: type << 8 | code
                  service INTEGER NOT NULL CHECK (service BETWEEN 0 AND 65535),
                  remote_address TEXT NOT NULL,
                  remote_prefix INTEGER NOT NULL CHECK (remote_prefix BETWEEN 0 AND 128),
                  connections INTEGER NOT NULL CHECK (connections >= 0),
                  packets INTEGER NOT NULL DEFAULT 0,
                  bytes INTEGER NOT NULL DEFAULT 0,
                  first_seen INTEGER NOT NULL,
                  last_seen INTEGER NOT NULL CHECK (last_seen >= first_seen),
                  verdict TEXT NOT NULL DEFAULT 'allowed' CHECK (verdict IN ('allowed', 'rejected')),
                  UNIQUE (direction, protocol, local_address, service, remote_address, remote_prefix, verdict)
                );
                INSERT INTO flows_v3 (id, direction, family, protocol, local_address, service, remote_address, remote_prefix,
                                      connections, packets, bytes, first_seen, last_seen)
                  SELECT id, direction, family, protocol, local_address, service, remote_address, remote_prefix,
                         connections, packets, bytes, first_seen, last_seen FROM flows;
                DROP TABLE flows;
                ALTER TABLE flows_v3 RENAME TO flows;
                CREATE INDEX flows_last_seen ON flows (last_seen);
                """)
        }
        registerActionMigrations(&migrator)
        registerDecisionWhitelistMigration(&migrator)
        // Which rows changed since the server last acknowledged them: every write numbers its
        // rows, so an upload resumes exactly where the last acknowledged one ended.
        migrator.registerMigration("v6-flow-change-sequence") { db in
            try db.execute(sql: """
                ALTER TABLE flows ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
                UPDATE flows SET change_seq = id;
                CREATE INDEX flows_change_seq ON flows (change_seq);
                """)
        }
        registerNameMigrations(&migrator)
        // No table changes: the mark of a database 0.3.0 wrote. It may hold what 0.2.0 cannot
        // read (rulesets with `appliesTo` selector expressions, kept from the server's policy),
        // and 0.2.0 refuses a database with a migration it does not know, so a downgrade is
        // refused by name instead of failing on the first such ruleset.
        migrator.registerMigration("v8-written-by-0.3.0") { _ in }
        return migrator
    }

    /// Writes one flush in one transaction: absolute values, so retrying a flush is harmless.
    /// - Parameters:
    ///   - names: the names the flush's new connections were looked up by (`FlowNames`), per flow.
    ///   - learned: what the DNS answers changed in the name table.
    public func write(_ changes: FlowChanges, names: [FlowNames] = [], learned: NameTable.Changes = .init()) throws {
        guard !changes.isEmpty || !names.isEmpty || !learned.isEmpty else { return }
        try pool.write { db in
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO flows (direction, family, protocol, local_address, service, remote_address, remote_prefix,
                                   connections, packets, bytes, first_seen, last_seen, verdict, change_seq)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (direction, protocol, local_address, service, remote_address, remote_prefix, verdict) DO UPDATE SET
                  connections = excluded.connections, packets = excluded.packets, bytes = excluded.bytes,
                  first_seen = excluded.first_seen, last_seen = excluded.last_seen, change_seq = excluded.change_seq
                """)
            var sequence = try Int64.fetchOne(db, sql: "SELECT MAX(change_seq) FROM flows") ?? 0
            for (key, stats) in changes.upserts {
                sequence += 1
                try upsert.execute(arguments: [
                    key.direction.rawValue, key.family.rawValue, Int(key.transport), key.local.description,
                    Int(key.service), key.remote.address.description, Int(key.remote.length),
                    Int64(clamping: stats.connections), Int64(clamping: stats.packets), Int64(clamping: stats.bytes),
                    stats.firstSeen, stats.lastSeen, key.verdict.rawValue, sequence,
                ])
            }
            let delete = try db.cachedStatement(sql: """
                DELETE FROM flows WHERE direction = ? AND protocol = ? AND local_address = ? AND service = ?
                  AND remote_address = ? AND remote_prefix = ? AND verdict = ?
                """)
            for key in changes.removals {
                try delete.execute(arguments: [
                    key.direction.rawValue, Int(key.transport), key.local.description, Int(key.service),
                    key.remote.address.description, Int(key.remote.length), key.verdict.rawValue,
                ])
            }
            try Self.attribute(names, in: db)
            try Self.write(learned, in: db)
        }
    }

    /// Rows written after change `sequence`, in the order written, with the number of each: what
    /// the server has not acknowledged yet.
    public func flowsChanged(after sequence: Int64, limit: Int) throws -> [(sequence: Int64, record: FlowRecord)] {
        try pool.read { db in
            let rows = try Self.fetch(db, sql: "SELECT \(Self.columns), change_seq, \(Self.namesColumn) FROM flows WHERE change_seq > ? ORDER BY change_seq LIMIT ?",
                                      arguments: [sequence, limit], extra: true, names: true)
            return rows.map { ($0.extra, FlowRecord(key: $0.key, stats: $0.stats, remoteNames: $0.names)) }
        }
    }

    /// Every aggregate, for the agent to continue where it stopped.
    public func loadAll() throws -> [(key: FlowKey, stats: FlowStats)] {
        try pool.read { db in
            try Self.fetch(db, sql: "SELECT \(Self.columns) FROM flows", arguments: [])
        }
    }

    /// Aggregates matching a filter, ordered by direction, protocol and port.
    public func flows(matching filter: FlowFilter) throws -> [(key: FlowKey, stats: FlowStats)] {
        try flows(matching: filter, names: false).map { ($0.key, $0.stats) }
    }

    /// As `flows(matching:)`, as records with their remote names: what `cordon flows` prints.
    public func records(matching filter: FlowFilter) throws -> [FlowRecord] {
        try flows(matching: filter, names: true).map { FlowRecord(key: $0.key, stats: $0.stats, remoteNames: $0.names) }
    }

    private func flows(matching filter: FlowFilter, names: Bool) throws -> [(key: FlowKey, stats: FlowStats, extra: Int64, names: [String])] {
        var clauses: [String] = []
        var arguments: StatementArguments = []
        if let direction = filter.direction {
            clauses.append("direction = ?")
            arguments += [direction.rawValue]
        }
        if let transport = filter.transport {
            clauses.append("protocol = ?")
            arguments += [Int(transport)]
        }
        if let port = filter.port {
            clauses.append("service = ? AND protocol IN (6, 17, 33, 132, 136)")
            arguments += [Int(port)]
        }
        if let since = filter.seenSince {
            clauses.append("last_seen >= ?")
            arguments += [since]
        }
        if let verdict = filter.verdict {
            clauses.append("verdict = ?")
            arguments += [verdict.rawValue]
        }
        let condition = clauses.isEmpty ? "" : " WHERE " + clauses.joined(separator: " AND ")
        let sql = "SELECT \(Self.columns)\(names ? ", 0, " + Self.namesColumn : "") FROM flows\(condition) "
            + "ORDER BY direction, verdict, protocol, service, local_address, remote_prefix DESC, remote_address"
        return try pool.read { db in try Self.fetch(db, sql: sql, arguments: arguments, extra: names, names: names) }
    }

    /// The columns `fetch` reads, by position: looking them up by name cost more than decoding.
    static let columns = """
        id, direction, local_address, remote_address, protocol, remote_prefix, service, connections, packets, bytes, \
        first_seen, last_seen, verdict
        """

    private static func fetch(_ db: Database, sql: String, arguments: StatementArguments) throws
        -> [(key: FlowKey, stats: FlowStats)]
    {
        try fetch(db, sql: sql, arguments: arguments, extra: false, names: false).map { ($0.key, $0.stats) }
    }

    /// `extra`: the query has one more column after `columns` (an integer), returned with each row;
    /// `names`: and after it `namesColumn`.
    static func fetch(_ db: Database, sql: String, arguments: StatementArguments, extra: Bool, names: Bool) throws
        -> [(key: FlowKey, stats: FlowStats, extra: Int64, names: [String])]
    {
        var result: [(key: FlowKey, stats: FlowStats, extra: Int64, names: [String])] = []
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let id: Int64 = row[0]
            guard let direction = Direction(rawValue: row[1]),
                  let local = IPAddress(row[2] as String),
                  let remote = IPAddress(row[3] as String)
            else {
                throw StoreError.corrupt(path: db.description, detail: "flows row \(id) holds an unreadable address or direction")
            }
            let key = FlowKey(direction: direction, transport: UInt8(row[4] as Int), local: local,
                              remote: IPPrefix(remote, length: row[5]), service: UInt16(row[6] as Int),
                              verdict: FlowVerdict(rawValue: row[12]) ?? .allowed)
            let stats = FlowStats(connections: UInt64(row[7] as Int64), packets: UInt64(row[8] as Int64),
                                  bytes: UInt64(row[9] as Int64), firstSeen: row[10], lastSeen: row[11])
            let remoteNames = names ? ((row[14] as String?)?.split(separator: " ").map(String.init) ?? []) : []
            result.append((key, stats, extra ? row[13] : 0, remoteNames))
        }
        return result
    }

    /// A persisted agent setting (mode, later the management channel), or nil.
    public func state(_ name: String) throws -> String? {
        try pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM agent_state WHERE name = ?", arguments: [name]) }
    }

    public func setState(_ name: String, _ value: String) throws {
        try setStates([(name, value)])
    }

    /// Several settings in one transaction: all of them or none.
    public func setStates(_ values: [(name: String, value: String)]) throws {
        try pool.write { db in
            let now = TimeText.now()
            for (name, value) in values {
                try db.execute(sql: """
                    INSERT INTO agent_state (name, value, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                    """, arguments: [name, value, now])
            }
        }
    }

    /// Moves the write-ahead log into the main file and truncates it (for measuring file size).
    public func checkpoint() throws {
        try pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
    }

    /// Number of aggregates on disk.
    public func flowCount() throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM flows") ?? 0 }
    }
}
