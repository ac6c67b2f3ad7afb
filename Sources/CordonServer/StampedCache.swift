import Logging
import PostgresNIO

/// A table's rows as a request needs them, kept in this replica's memory and read again only
/// where they changed, so that a map's work grows with what changed and not with the fleet.
///
/// The database stays the truth. A trigger stamps every write that matters with its
/// transaction (an `xid8` column), whoever made it: this server, an older replica during an
/// upgrade, a hand-made UPDATE. Each refresh reads the rows stamped at or after the oldest
/// transaction that was still running at the previous refresh, so a transaction that committed
/// late is read then; a row read twice replaces itself. Refreshes run one at a time, in order,
/// each starting after the request that asked for it.
///
/// Transaction ids only grow within one cluster. A database restored into another cluster (a
/// dump into a fresh one) starts lower: a refresh that finds the oldest running transaction
/// below its horizon starts over from nothing and reads every row again, and at start the
/// server stamps rows carried over from the old cluster, above the new one's ids, as written now
/// (`Migrations.restamp`), so that they are not read again on every refresh.
actor StampedCache<State: Sendable> {
    private let empty: State
    private var state: State
    /// The oldest transaction running at the last refresh: rows stamped from it on are read again.
    private var horizon = "0"
    private var tail: Task<Void, Never>?

    init(_ state: State) {
        empty = state
        self.state = state
    }

    /// The state as the database has it now, and how many rows this refresh read. `read` gets
    /// the horizon (an `xid8`, as text) and returns the rows stamped at or after it; `apply`
    /// folds them into the state.
    func current<Change: Sendable>(client: PostgresClient, logger: Logger,
                                   read: @escaping @Sendable (_ horizon: String) async throws -> [Change],
                                   apply: @escaping @Sendable (inout State, [Change]) -> Void) async throws -> (state: State, read: Int) {
        let previous = tail
        let refresh = Task { () async throws -> Int in
            await previous?.value
            return try await self.refresh(client: client, logger: logger, read: read, apply: apply)
        }
        tail = Task { _ = try? await refresh.value }
        let count = try await refresh.value
        return (state, count)
    }

    private func refresh<Change: Sendable>(client: PostgresClient, logger: Logger,
                                           read: @Sendable (String) async throws -> [Change],
                                           apply: @Sendable (inout State, [Change]) -> Void) async throws -> Int {
        // The horizon first: whatever committed before it is visible to the read that follows.
        var next = horizon
        for try await xmin in try await client.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", logger: logger).decode(String.self) {
            next = xmin
        }
        if Self.startsOver(horizon: horizon, xmin: next) { (state, horizon) = (empty, "0") }
        let changes = try await read(horizon)
        apply(&state, changes)
        horizon = next
        return changes.count
    }

    /// Whether the cluster's oldest running transaction is below the last horizon: ids went
    /// backwards, so the database is another cluster's (a restore), and every row is read again.
    static func startsOver(horizon: String, xmin: String) -> Bool {
        guard let now = UInt64(xmin), let last = UInt64(horizon) else { return false }
        return now < last
    }
}
