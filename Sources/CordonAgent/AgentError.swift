#if canImport(Glibc)
import Glibc
#endif

/// Failures of the agent and its control channel, worded for the operator.
public enum AgentError: Error, CustomStringConvertible {
    case system(String, Int32)
    case notRunning(socket: String, reason: String)
    /// Another agent holds the database or the socket (its pid, as its lock file says).
    case alreadyRunning(resource: String, holder: String)
    case protocolViolation(String)
    /// The database holds something the agent will not act on without an operator.
    case invalidState(String)

    public var description: String {
        switch self {
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .notRunning(let socket, let reason): return "no agent answers on \(socket) (\(reason))"
        case .alreadyRunning(let resource, let holder): return "another agent (pid \(holder)) is running on \(resource)"
        case .protocolViolation(let what): return "control socket: \(what)"
        case .invalidState(let what): return what
        }
    }
}
