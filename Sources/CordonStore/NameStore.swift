import CordonCore
import GRDB

/// The names a flush's new connections of one flow were looked up by.
public struct FlowNames: Sendable, Equatable {
    public var key: FlowKey
    /// Each with the time of its newest answer, most recent first.
    public var names: [NameTable.Binding]
    /// Unix seconds of the newest connection.
    public var seen: Int64

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.key == rhs.key && lhs.seen == rhs.seen && lhs.names == rhs.names
    }

    public init(key: FlowKey, names: [NameTable.Binding], seen: Int64) {
        self.key = key
        self.names = names
        self.seen = seen
    }
}

/// One learned binding with its address, as `cordon names` lists it.
public struct NameRow: Sendable, Equatable {
    public var name: String
    public var address: IPAddress
    public var firstSeen: Int64
    public var lastSeen: Int64
    public var expires: Int64
    /// Asked for, not only a CNAME target.
    public var queried: Bool
}

extension FlowStore {
    /// Names kept per flow: the most recent. A flow to a CDN address shared by many names would
    /// otherwise collect every one of them over a week.
    public static let namesPerFlow = 16

    static func registerNameMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v7-names") { db in
            try db.execute(sql: """
                CREATE TABLE names (
                  address TEXT NOT NULL,
                  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
                  first_seen INTEGER NOT NULL,
                  last_seen INTEGER NOT NULL CHECK (last_seen >= first_seen),
                  expires INTEGER NOT NULL,
                  -- 1: asked for by a program; 0: only reached through a CNAME
                  queried INTEGER NOT NULL CHECK (queried IN (0, 1)),
                  PRIMARY KEY (address, name)
                ) WITHOUT ROWID;
                CREATE INDEX names_name ON names (name);
                -- A flow's rows go with it when it is merged into a coarser prefix.
                CREATE TABLE flow_names (
                  flow_id INTEGER NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
                  name TEXT NOT NULL,
                  -- the newest connection it named, then its newest answer: the order of remote_names
                  last_seen INTEGER NOT NULL,
                  answered INTEGER NOT NULL,
                  queried INTEGER NOT NULL CHECK (queried IN (0, 1)),
                  PRIMARY KEY (flow_id, name)
                ) WITHOUT ROWID;
                """)
        }
    }

    /// `SELECT` column of a flow's names, most recent first, separated by spaces (a name holds none).
    static let namesColumn = namesColumn(queriedOnly: false)

    static func namesColumn(queriedOnly: Bool) -> String {
        "(SELECT group_concat(name, ' ') FROM (SELECT name FROM flow_names WHERE flow_id = flows.id\(queriedOnly ? " AND queried = 1" : "") "
            + "ORDER BY last_seen DESC, answered DESC, queried DESC, name))"
    }

    /// The names of every flow that has any, most recent first. `queriedOnly`: only the names
    /// programs asked for, not the CNAME targets behind them (what a proposal names).
    public func flowNames(queriedOnly: Bool = false) throws -> [FlowKey: [String]] {
        let sql = "SELECT \(Self.columns), 0, \(Self.namesColumn(queriedOnly: queriedOnly)) FROM flows "
            + "WHERE EXISTS (SELECT 1 FROM flow_names WHERE flow_id = flows.id\(queriedOnly ? " AND queried = 1" : ""))"
        return try pool.read { db in
            var result: [FlowKey: [String]] = [:]
            for row in try Self.fetch(db, sql: sql, arguments: [], extra: true, names: true) { result[row.key] = row.names }
            return result
        }
    }

    /// Adds names to flows written in the same transaction. A key with no row (its remote was
    /// rolled up into a prefix) gets none: a prefix has no name.
    static func attribute(_ names: [FlowNames], in db: Database) throws {
        guard !names.isEmpty else { return }
        let id = try db.cachedStatement(sql: """
            SELECT id FROM flows WHERE direction = ? AND protocol = ? AND local_address = ? AND service = ?
              AND remote_address = ? AND remote_prefix = ? AND verdict = ?
            """)
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO flow_names (flow_id, name, last_seen, answered, queried) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (flow_id, name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen),
              answered = max(answered, excluded.answered), queried = max(queried, excluded.queried)
            """)
        let trim = try db.cachedStatement(sql: """
            DELETE FROM flow_names WHERE flow_id = ?1 AND name NOT IN
              (SELECT name FROM flow_names WHERE flow_id = ?1 ORDER BY last_seen DESC, answered DESC, queried DESC, name LIMIT ?2)
            """)
        for entry in names where !entry.names.isEmpty {
            let key = entry.key
            guard let flow = try Int64.fetchOne(id, arguments: [
                key.direction.rawValue, Int(key.transport), key.local.description, Int(key.service),
                key.remote.address.description, Int(key.remote.length), key.verdict.rawValue,
            ]) else { continue }
            for binding in entry.names.prefix(namesPerFlow) {
                try upsert.execute(arguments: [flow, binding.name, entry.seen, binding.lastSeen, binding.queried])
            }
            try trim.execute(arguments: [flow, namesPerFlow])
        }
    }

    static func write(_ learned: NameTable.Changes, in db: Database) throws {
        guard !learned.isEmpty else { return }
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO names (address, name, first_seen, last_seen, expires, queried) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (address, name) DO UPDATE SET
              first_seen = excluded.first_seen, last_seen = excluded.last_seen, expires = excluded.expires, queried = excluded.queried
            """)
        for (address, binding) in learned.upserts {
            try upsert.execute(arguments: [address.description, binding.name, binding.firstSeen, binding.lastSeen, binding.expires, binding.queried])
        }
        let delete = try db.cachedStatement(sql: "DELETE FROM names WHERE address = ? AND name = ?")
        for pair in learned.removals { try delete.execute(arguments: [pair.address.description, pair.name]) }
    }

    /// Every learned binding, by name and address.
    public func names() throws -> [NameRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, address, first_seen, last_seen, expires, queried FROM names ORDER BY name, address").map { row in
                guard let address = IPAddress(row[1] as String) else {
                    throw StoreError.corrupt(path: path, detail: "names row \(row[0] as String) holds an unreadable address")
                }
                return NameRow(name: row[0], address: address, firstSeen: row[2], lastSeen: row[3], expires: row[4], queried: row[5])
            }
        }
    }

    /// The name table as the last run left it, for the agent to continue with.
    public func loadNames(limits: NameTable.Limits) throws -> NameTable {
        var table = NameTable(limits: limits)
        // Oldest first, so that when a smaller limit applies the newest are kept.
        for row in try names().sorted(by: { $0.lastSeen < $1.lastSeen }) {
            table.load(address: row.address, binding: .init(name: row.name, firstSeen: row.firstSeen, lastSeen: row.lastSeen,
                                                            expires: row.expires, queried: row.queried))
        }
        return table
    }
}
