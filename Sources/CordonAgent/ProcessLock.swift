#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock on a file beside a resource (the database, the control socket), held for the
/// life of the agent: the kernel releases it when the process dies, however it dies, so a stale
/// lock cannot exist and a second agent is refused before it touches anything.
public final class ProcessLock: Sendable {
    public let path: String
    private let fd: Int32

    /// - Throws: `AgentError.alreadyRunning` naming the holder's pid when another process holds it.
    public init(path: String, guarding resource: String) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw AgentError.system("lock file \(path)", errno) }
        var result: Int32
        repeat { result = flock(fd, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(fd, &buffer, buffer.count, 0)
            close(fd)
            guard code == EWOULDBLOCK else { throw AgentError.system("lock file \(path)", code) }
            let pid = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self).trimmingWhitespace : "unknown"
            throw AgentError.alreadyRunning(resource: resource, holder: pid)
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        self.fd = fd
    }

    deinit { close(fd) }
}

private extension String {
    var trimmingWhitespace: String {
        String(unicodeScalars.filter { !$0.properties.isWhitespace })
    }
}
