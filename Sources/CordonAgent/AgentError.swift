#if canImport(Glibc)
import Glibc
#endif

/// Failures of the agent and its control channel, worded for the operator.
public enum AgentError: Error, CustomStringConvertible {
    case system(String, Int32)
    case notRunning(socket: String, reason: String)
    /// The agent took the request but no answer came (it stopped, or it is slow): the outcome is
    /// unknown, and nothing may act around it.
    case noAnswer(socket: String, reason: String)
    /// Another agent holds the database or the socket (its pid, as its lock file says).
    case alreadyRunning(resource: String, holder: String)
    case protocolViolation(String)
    /// The control socket is root's (mode 0600): a user without the right to it is told so,
    /// not that no agent runs.
    case permissionDenied(socket: String)
    /// The socket or its directory could be replaced by another user, whose fake agent could
    /// answer root's commands: not talked to.
    case untrustedSocket(socket: String, reason: String)
    /// The database holds something the agent will not act on without an operator.
    case invalidState(String)

    public var description: String {
        switch self {
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .notRunning(let socket, let reason): return "no agent answers on \(socket) (\(reason))"
        case .noAnswer(let socket, let reason): return "the agent on \(socket) took the request but \(reason): the outcome is unknown; check `cordon status`"
        case .alreadyRunning(let resource, let holder): return "another agent or cordon command (pid \(holder)) is running on \(resource)"
        case .protocolViolation(let what): return "control socket: \(what)"
        case .permissionDenied(let socket): return "permission denied on \(socket): the control socket is root's only; run cordon as root"
        case .untrustedSocket(let socket, let reason): return "not talking to \(socket): \(reason)"
        case .invalidState(let what): return what
        }
    }
}
