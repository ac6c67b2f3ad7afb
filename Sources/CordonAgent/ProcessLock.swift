#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An exclusive lock on a file beside a resource (the database, the control socket), held for the
/// life of the agent: the kernel releases it when the process dies, however it dies, so a stale
/// lock cannot exist and a second agent is refused before it touches anything.
public final class ProcessLock: Sendable {
    public let path: String
    private let fd: Int32

    /// - Parameters:
    ///   - holder: who takes it, written into the file (`agent`, or the CLI command acting without
    ///     an agent) so that a refusal names it.
    ///   - waitingForCommands: seconds to wait while the holder is a CLI command, which lets go
    ///     within seconds (an isolation or a release with its check); an agent is refused at once.
    /// - Throws: `AgentError.alreadyRunning` naming the holder when another process holds it.
    public init(path: String, guarding resource: String, holder: String = "agent", waitingForCommands: Double = 0) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw AgentError.system("lock file \(path)", errno) }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, waitingForCommands) * 1e9)
        while true {
            var result: Int32
            repeat { result = flock(fd, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
            if result == 0 { break }
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = pread(fd, &buffer, buffer.count, 0)
            let text = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self).trimmingWhitespace : "unknown"
            if code == EWOULDBLOCK, !text.hasSuffix(" agent"), DispatchTime.now().uptimeNanoseconds < deadline {
                usleep(100_000)
                continue
            }
            close(fd)
            guard code == EWOULDBLOCK else { throw AgentError.system("lock file \(path)", code) }
            throw AgentError.alreadyRunning(resource: resource, holder: text)
        }
        let text = Array("\(getpid()) \(holder)\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        self.fd = fd
    }

    deinit { close(fd) }
}

private extension String {
    var trimmingWhitespace: String {
        var text = self
        while text.last?.isWhitespace == true { text.removeLast() }
        return text
    }
}
