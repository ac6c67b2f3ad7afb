import CordonWire
import Logging
import PostgresNIO

/// `/readyz`: whether this replica can do its work now, which `/healthz` (liveness) must not
/// depend on. A load balancer takes the replica out while the database does not answer or the
/// LISTEN connection is down, and a service manager does not restart it for that.
enum ReadinessCheck {
    /// A trivial query within `seconds`, and the listener's state.
    static func check(client: PostgresClient, listener: DesiredListener, seconds: Double, logger: Logger) async -> Readiness {
        var database: String?
        do {
            _ = try await Deadline.run(seconds: seconds) { try await client.query("SELECT 1", logger: logger) }
        } catch let error as Deadline.Exceeded {
            database = "\(error)"
        } catch {
            database = "the database failed: \(String(describing: error).prefix(200))"
        }
        return Readiness(database: database, notifications: listener.problem)
    }
}
