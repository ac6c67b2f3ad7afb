#if canImport(Glibc)
import Glibc
#endif

/// Failures of the agent and its control channel, worded for the operator.
public enum AgentError: Error, CustomStringConvertible {
    case system(String, Int32)
    case notRunning(socket: String, reason: String)
    case alreadyRunning(socket: String)
    case protocolViolation(String)
    /// The database holds something the agent will not act on without an operator.
    case invalidState(String)

    public var description: String {
        switch self {
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .notRunning(let socket, let reason): return "no agent answers on \(socket) (\(reason))"
        case .alreadyRunning(let socket): return "another agent already answers on \(socket)"
        case .protocolViolation(let what): return "control socket: \(what)"
        case .invalidState(let what): return what
        }
    }
}
