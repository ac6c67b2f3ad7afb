#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A child process started with posix_spawn and reaped with waitpid.
///
/// Foundation's `Process` reaps children on a run loop of its own, and was seen here to leave a
/// killed child unreaped while `waitUntilExit` waited forever; the lab needs exact control.
public final class Child: Sendable {
    public let pid: pid_t
    public let arguments: [String]
    private let exitStatus = Mutex<Int32?>(nil)
    private let usage = Mutex<rusage?>(nil)

    /// Starts `arguments[0]` (looked up in PATH) with stdin from `input` (or /dev/null) and
    /// stdout and stderr appended to `output` (or /dev/null).
    public init(_ arguments: [String], input: String? = nil, output: String? = nil, errors: String? = nil) throws {
        guard let executable = Lab.which(arguments[0]) else { throw LabError("`\(arguments[0])` not found") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, input ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errors ?? output ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Children start with default signal handling and nothing blocked, whatever the parent
        // (the agent blocks SIGTERM in all threads) had.
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments.dropFirst()).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else { throw LabError("start \(arguments[0]): \(String(cString: strerror(result)))") }
        self.pid = pid
        self.arguments = arguments
    }

    /// The exit status (128 + signal for a killed child), or nil while it runs.
    public var status: Int32? {
        exitStatus.withLock { cached in
            if let cached { return cached }
            var raw: Int32 = 0
            var resources = rusage()
            guard wait4(pid, &raw, WNOHANG, &resources) == pid else { return nil }
            usage.withLock { $0 = resources }
            // WIFEXITED / WEXITSTATUS / WTERMSIG are macros; the encoding is the classic one.
            let signal = raw & 0x7F
            cached = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
            return cached
        }
    }

    public var isRunning: Bool { status == nil }

    /// Peak resident set of the finished child, bytes (nil while it runs).
    public var peakRSS: Int? {
        _ = status
        return usage.withLock { $0.map { Int($0.ru_maxrss) * 1024 } }
    }

    public func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Waits up to `timeout` seconds; returns the exit status, or nil if it still runs.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status { return status }
            usleep(1_000)
        }
        return status
    }
}
