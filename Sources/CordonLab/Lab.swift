#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// The output of a finished command.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public var succeeded: Bool { status == 0 }

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

public struct LabError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Throwaway network namespaces joined by veth pairs, for the demo, the integration tests and the
/// benchmarks: the only places Cordon is ever allowed to change a firewall.
///
/// Everything the lab creates is named after its process id, deleted by `cleanup()` (also called
/// on deinit) and, should the process die first, swept by the next lab (`sweepStale`).
public final class Lab: Sendable {
    public static let namePrefix = "cordon-lab-"
    public let tag: String
    private let created = Mutex<[String]>([])
    private let children = Mutex<[Child]>([])
    /// Process-wide: labs of one process (parallel test suites) must never pick the same names.
    private static let labs = Atomic<Int>(0)
    private static let links = Atomic<Int>(0)
    /// Holds files the lab writes (configs, logs, the database).
    public let directory: String

    public init() throws {
        guard geteuid() == 0 else { throw LabError("network namespaces need root") }
        guard Self.which("ip") != nil else { throw LabError("`ip` not found: apt-get install -y iproute2") }
        Self.sweepStale()
        // The process id first (sweepStale reads it), then a number unique in this process.
        tag = "\(getpid())x\(Self.labs.add(1, ordering: .relaxed).newValue)"
        directory = NSTemporaryDirectory() + "cordon-lab-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit { cleanup() }

    /// Creates a namespace with loopback up; returns its name.
    @discardableResult
    public func namespace(_ role: String) throws -> String {
        let name = "\(Self.namePrefix)\(tag)-\(role)"
        _ = try? run(nil, ["ip", "netns", "del", name])
        try check(run(nil, ["ip", "netns", "add", name]), "create namespace \(name)")
        created.withLock { $0.append(name) }
        try check(run(name, ["ip", "link", "set", "lo", "up"]), "bring up lo in \(name)")
        return name
    }

    /// Joins two namespaces with a veth pair and gives each end its addresses (CIDR notation).
    /// Returns the interface names (in `a`, in `b`).
    @discardableResult
    public func connect(_ a: String, _ aAddresses: [String], _ b: String, _ bAddresses: [String]) throws -> (String, String) {
        let index = Self.links.add(1, ordering: .relaxed).newValue
        // Interface names are limited to 15 bytes: "cl", the link number, a/b, the pid's last digits.
        let pid = String(getpid() % 100_000)
        let left = "cl\(index)a\(pid)", right = "cl\(index)b\(pid)"
        try check(run(nil, ["ip", "link", "add", left, "netns", a, "type", "veth", "peer", "name", right, "netns", b]),
                  "create veth \(left)/\(right)")
        for (namespace, interface, addresses) in [(a, left, aAddresses), (b, right, bAddresses)] {
            for address in addresses {
                // nodad: IPv6 addresses are usable at once instead of after duplicate detection.
                let extra = address.contains(":") ? ["nodad"] : []
                try check(run(namespace, ["ip", "addr", "add", address, "dev", interface] + extra), "address \(address)")
            }
            try check(run(namespace, ["ip", "link", "set", interface, "up"]), "bring up \(interface)")
        }
        return (left, right)
    }

    /// Runs a command to completion, inside `namespace` when given; kills it after `timeout`.
    @discardableResult
    public func run(_ namespace: String?, _ arguments: [String], timeout: Double = 30, input: String? = nil) throws -> CommandResult {
        let base = directory + "/.run-\(UInt64.random(in: 0...UInt64.max))"
        let inputPath = base + ".in", out = base + ".out", err = base + ".err"
        defer { for path in [inputPath, out, err] { unlink(path) } }
        if let input { try input.write(toFile: inputPath, atomically: false, encoding: .utf8) }
        let child = try Child(command(namespace, arguments), input: input == nil ? nil : inputPath, output: out, errors: err)
        guard let status = child.wait(timeout: timeout) else {
            child.signal(SIGKILL)
            child.wait(timeout: 5)
            throw LabError("timed out after \(timeout) s: \(arguments.joined(separator: " "))")
        }
        return CommandResult(status: status,
                             stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    /// Starts a long-running command (a server, the agent); the lab kills it at cleanup.
    /// Its output goes to `log` when given.
    public func spawn(_ namespace: String?, _ arguments: [String], log: String? = nil) throws -> Child {
        let child = try Child(command(namespace, arguments), output: log)
        children.withLock { $0.append(child) }
        return child
    }

    /// Sends a signal and waits up to `timeout` seconds for the child to exit.
    /// Returns its exit status, or nil if it did not exit in time.
    @discardableResult
    public func stop(_ child: Child, signal: Int32 = SIGTERM, timeout: Double = 10) -> Int32? {
        child.signal(signal)
        return child.wait(timeout: timeout)
    }

    /// Starts `cordon agent` in a namespace and waits (up to 10 s) until it answers `status` on
    /// `socket`. `prefix` goes before the binary (e.g. `taskset -c 1`).
    public func startAgent(in namespace: String, binary: String, arguments: [String], socket: String, log: String,
                           prefix: [String] = []) throws -> Child {
        let agent = try spawn(namespace, prefix + [binary, "agent"] + arguments, log: log)
        for _ in 0..<500 {
            if try run(nil, [binary, "status", "--socket", socket]).succeeded { return agent }
            guard agent.isRunning else { break }
            usleep(20_000)
        }
        throw LabError("agent did not come up:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// Runs `body` on a thread of its own that has joined `namespace`: netlink sockets it opens talk
    /// to that namespace's kernel state, never the machine's. (`setns` moves only the calling
    /// thread, which is why the body does not run on the caller's.)
    public func inNamespace<T: Sendable>(_ namespace: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let fd = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0, Self.setNetworkNamespace(fd) == 0 else {
                let code = errno
                if fd >= 0 { close(fd) }
                result.withLock { $0 = .failure(LabError("join namespace \(namespace): \(String(cString: strerror(code)))")) }
                return
            }
            close(fd)
            let outcome = Result { try body() }
            result.withLock { $0 = outcome }
        }
        thread.start()
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// glibc's `setns`, which Swift's Glibc module hides with the other GNU extensions.
    private static func setNetworkNamespace(_ fd: Int32) -> Int32 {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return -1 }
        let cloneNewNet: Int32 = 0x4000_0000
        return unsafeBitCast(symbol, to: SetNS.self)(fd, cloneNewNet)
    }

    /// Gives a namespace its own /etc/resolv.conf: `ip netns exec` bind-mounts
    /// /etc/netns/NAME/resolv.conf over it for commands run there. Removed at cleanup.
    public func setResolvers(_ namespace: String, _ addresses: [String]) throws {
        let directory = "/etc/netns/\(namespace)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try addresses.map { "nameserver \($0)\n" }.joined().write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
    }

    /// Kills what the lab started and deletes its namespaces and files. Idempotent.
    public func cleanup() {
        for child in children.withLock({ list in defer { list.removeAll() }; return list }) {
            child.signal(SIGKILL)
            child.wait(timeout: 5)
        }
        for name in created.withLock({ list in defer { list.removeAll() }; return list }).reversed() {
            // Killing every process left in the namespace first lets `ip netns del` free it at once.
            _ = try? run(nil, ["ip", "netns", "pids", name]).stdout.split(separator: "\n").compactMap { Int32($0) }
                .forEach { kill($0, SIGKILL) }
            _ = try? run(nil, ["ip", "netns", "del", name])
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Clears what labs whose process no longer exists (a crash, a trap, a SIGKILL: no cleanup
    /// ran) left behind: the processes in their namespaces (a server, PostgreSQL), which outlive
    /// a deleted namespace, then the namespaces, then any process still naming their directory
    /// and the directory itself.
    public static func sweepStale() {
        func dead(_ tag: Substring) -> Bool {
            guard let pid = Int32(tag.prefix { $0.isNumber }) else { return false }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        for name in names where name.hasPrefix(namePrefix) && dead(name.dropFirst(namePrefix.count)) {
            processes(inNamespace: name).forEach { kill($0, SIGKILL) }
            (try? Child(["ip", "netns", "del", name]))?.wait(timeout: 10)
        }
        let temporary = NSTemporaryDirectory()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? []
        for entry in entries where entry.hasPrefix("cordon-lab-") && dead(entry.dropFirst("cordon-lab-".count)) {
            let directory = temporary + entry
            processes(naming: directory + "/").forEach { kill($0, SIGKILL) }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The processes in a named namespace (`ip netns pids`).
    private static func processes(inNamespace name: String) -> [pid_t] {
        let output = NSTemporaryDirectory() + "cordon-sweep-\(getpid()).out"
        defer { unlink(output) }
        guard let child = try? Child(["ip", "netns", "pids", name], output: output), child.wait(timeout: 10) == 0 else { return [] }
        return ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    /// The processes whose command line holds `text` (a dead lab's directory: its PostgreSQL's
    /// `-D`, its server's `--data`).
    private static func processes(naming text: String) -> [pid_t] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return ids.compactMap { pid_t($0) }.filter { pid in
            guard pid != getpid(), let line = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: line.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text)
        }
    }

    /// Finds an executable in PATH and the sbin directories (root's tools live there).
    /// Where `.ci/setup --tests` unpacks the test peers whose packages would start, enable or
    /// replace services (sshd, chronyd); searched after PATH.
    public static let testPeers = "/opt/cordon-test-peers"

    public static func which(_ name: String) -> String? {
        if name.hasPrefix("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
            + ":\(testPeers)/usr/sbin:\(testPeers)/usr/bin"
        for directory in path.split(separator: ":") where access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        return nil
    }

    private func command(_ namespace: String?, _ arguments: [String]) -> [String] {
        namespace.map { ["ip", "netns", "exec", $0] + arguments } ?? arguments
    }

    /// Runs a setup step that must succeed; its failure, with what it printed, is thrown.
    public func mustRun(_ namespace: String?, _ arguments: [String]) throws {
        try check(try run(namespace, arguments), arguments.joined(separator: " "))
    }

    private func check(_ result: CommandResult, _ what: String) throws {
        guard result.succeeded else {
            throw LabError("\(what) failed (exit \(result.status)): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
