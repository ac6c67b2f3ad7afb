import CordonCore
import CordonWire
import Foundation
import Logging
import PostgresNIO

/// Every host's shipped decision log: each entry once (by its sequence), the chain checked as
/// it arrives, a gap or a broken link recorded against the host.
public protocol LogStore: Sendable {
    /// Stores what is new; the highest sequence stored for the host (what the agent may forget).
    func append(host: UUID, entries: [Decision]) async throws -> Int64
    func log(host: UUID) async throws -> HostLog
}

public struct PostgresLogStore: LogStore {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func append(host: UUID, entries: [Decision]) async throws -> Int64 {
        try await client.transaction(logger: logger) { connection in
            // One upload per host at a time: the check below reads what the one before wrote.
            var head: Int64 = 0
            for try await value in try await connection.query("SELECT log_head FROM hosts WHERE id = \(host) FOR UPDATE", logger: logger)
                .decode(Int64.self) { head = value }
            let batch = entries.sorted { $0.sequence < $1.sequence }
            guard let first = batch.first, let last = batch.last else { return head }
            var stored: [Int64: String] = [:]
            for try await (sequence, hash) in try await connection.query("""
                SELECT sequence, hash FROM decision_log WHERE host_id = \(host) AND sequence BETWEEN \(first.sequence) AND \(last.sequence)
                """, logger: logger).decode((Int64, String).self) { stored[sequence] = hash }
            var previous: Decision?
            for try await text in try await connection.query("""
                SELECT entry FROM decision_log WHERE host_id = \(host) AND sequence < \(first.sequence) ORDER BY sequence DESC LIMIT 1
                """, logger: logger).decode(String.self) { previous = try? Wire.decode(Decision.self, from: Data(text.utf8)) }
            var problems: [(Int64, String)] = []
            var sequences: [Int64] = [], texts: [String] = [], hashes: [String] = []
            for entry in batch {
                if let hash = stored[entry.sequence] {
                    // Sent again (the acknowledgement was lost): stored once. A different entry under
                    // the same number is a rewritten history.
                    if hash != entry.hash { problems.append((entry.sequence, "entry \(entry.sequence) differs from the one received before")) }
                } else {
                    problems += Decision.verifyChain([entry], after: previous).map { (entry.sequence, $0) }
                    sequences.append(entry.sequence)
                    texts.append(String(decoding: Wire.encode(entry), as: UTF8.self))
                    hashes.append(entry.hash)
                    stored[entry.sequence] = entry.hash
                }
                previous = entry
            }
            if !sequences.isEmpty {
                try await connection.query("""
                    INSERT INTO decision_log (host_id, sequence, entry, hash)
                    SELECT \(host), * FROM unnest(\(sequences)::bigint[], \(texts)::text[], \(hashes)::text[])
                    """, logger: logger)
            }
            for (sequence, problem) in problems {
                try await connection.query("INSERT INTO log_problems (host_id, sequence, problem) VALUES (\(host), \(sequence), \(problem))", logger: logger)
            }
            head = max(head, last.sequence)
            try await connection.query("""
                UPDATE hosts SET log_head = \(head), log_problems = log_problems + \(Int32(problems.count)) WHERE id = \(host)
                """, logger: logger)
            if !problems.isEmpty { logger.warning("decision log of host \(host): \(problems.map(\.1).joined(separator: "; "))") }
            return head
        }
    }

    public func log(host: UUID) async throws -> HostLog {
        var entries: [Decision] = []
        for try await text in try await client.query("SELECT entry FROM decision_log WHERE host_id = \(host) ORDER BY sequence", logger: logger)
            .decode(String.self) {
            if let entry = try? Wire.decode(Decision.self, from: Data(text.utf8)) { entries.append(entry) }
        }
        var problems = Decision.verifyChain(entries)
        for try await problem in try await client.query("SELECT problem FROM log_problems WHERE host_id = \(host) ORDER BY id", logger: logger)
            .decode(String.self) where !problems.contains(problem) {
            problems.append(problem)
        }
        return HostLog(hostID: host.uuidString.lowercased(),
                       verification: HostLog.Verification(intact: problems.isEmpty, entries: entries.count, problems: problems), entries: entries)
    }
}
