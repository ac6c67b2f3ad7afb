#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A throwaway PostgreSQL cluster: initdb into a directory of the lab as the unprivileged
/// `postgres` user, its own port and socket directory, inside a namespace. Stopped at cleanup
/// (the lab kills what it spawned); nothing of the machine's own PostgreSQL is touched.
public final class PostgresCluster: Sendable {
    public let lab: Lab
    /// nil: the machine's own loopback, for tests that talk to the database from their own process.
    public let namespace: String?
    public let port: Int
    public let directory: String
    private let bin: String
    private let listen: String
    private let process: Mutex<Child?>

    /// The binaries of the newest PostgreSQL installed (Debian's /usr/lib/postgresql/N/bin).
    public static func binaries() -> String? {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "/usr/lib/postgresql/\($0)/bin" }.flatMap { access($0 + "/initdb", X_OK) == 0 ? $0 : nil }
    }

    /// `name`: its directory in the lab (two clusters in one lab need two). `listen`: the
    /// addresses it listens on ("*" for a replicated pair reached over links).
    public init(lab: Lab, namespace: String?, port: Int = 5432, durable: Bool = false, name: String = "postgres", listen: String = "127.0.0.1") throws {
        let (bin, user) = try Self.prerequisites()
        self.lab = lab
        self.namespace = namespace
        self.port = port
        self.bin = bin
        self.listen = listen
        directory = lab.directory + "/" + name
        try Self.ownedDirectory(directory, user)
        let initdb = try lab.run(nil, ["runuser", "-u", "postgres", "--", bin + "/initdb", "-A", "trust", "-U", "postgres", "-D", directory + "/data",
                                       "--no-sync", "-E", "UTF8"], timeout: 120)
        guard initdb.succeeded else { throw LabError("initdb failed: \(initdb.stderr)") }
        // Tests trade durability against an operating-system crash (which they never cause) for speed.
        let settings = durable ? "" : "fsync = off\nfull_page_writes = off\n"
        try (settings + "max_connections = 200\nshared_buffers = 128MB\n")
            .write(toFile: directory + "/data/postgresql.auto.conf", atomically: false, encoding: .utf8)
        _ = chown(directory + "/data/postgresql.auto.conf", user.pw_uid, user.pw_gid)
        if listen != "127.0.0.1" {
            // The lab's links only: trust, as the loopback is trusted.
            try Self.append("host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n", to: directory + "/data/pg_hba.conf")
        }
        process = Mutex(nil)
        try start()
    }

    /// A streaming standby of `primary`, made as an operator makes one (`pg_basebackup -R`),
    /// reaching it at `primaryAddress`, named `standby` to it (its `application_name`, for
    /// `synchronous_standby_names`).
    public init(standbyOf primary: PostgresCluster, at primaryAddress: String, namespace: String, name: String) throws {
        let (bin, user) = try Self.prerequisites()
        lab = primary.lab
        self.namespace = namespace
        port = primary.port
        self.bin = bin
        listen = primary.listen
        directory = lab.directory + "/" + name
        try Self.ownedDirectory(directory, user)
        let backup = try lab.run(namespace, ["runuser", "-u", "postgres", "--", bin + "/pg_basebackup", "-h", primaryAddress, "-p", String(port),
                                             "-U", "postgres", "-D", directory + "/data", "-X", "stream", "-R", "--no-sync"], timeout: 120)
        guard backup.succeeded else { throw LabError("pg_basebackup failed: \(backup.stderr)") }
        try Self.append("primary_conninfo = 'host=\(primaryAddress) port=\(port) user=postgres application_name=standby'\n",
                        to: directory + "/data/postgresql.auto.conf")
        process = Mutex(nil)
        try start()
    }

    private static func prerequisites() throws -> (String, passwd) {
        guard let bin = binaries() else { throw LabError("PostgreSQL not found: apt-get install -y postgresql-15 (with policy-rc.d: no service starts)") }
        guard let user = getpwnam("postgres") else { throw LabError("no `postgres` user: install Debian's postgresql package") }
        return (bin, user.pointee)
    }

    /// Appends to one of the cluster's configuration files, as `>>` does (its owner unchanged).
    private static func append(_ text: String, to path: String) throws {
        let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? file.close() }
        file.seekToEndOfFile()
        file.write(Data(text.utf8))
    }

    private static func ownedDirectory(_ path: String, _ user: passwd) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard chown(path, user.pw_uid, user.pw_gid) == 0 else { throw LabError("chown \(path) failed") }
    }

    /// The standby made primary, as an operator or a promoter does (`pg_ctl promote`, which
    /// waits until it is done).
    public func promote() throws {
        let result = try lab.run(namespace, ["runuser", "-u", "postgres", "--", bin + "/pg_ctl", "promote", "-w", "-D", directory + "/data"], timeout: 60)
        guard result.succeeded else { throw LabError("pg_ctl promote failed: \(result.stderr)\(result.stdout)") }
    }

    public var url: String { "postgresql://postgres@127.0.0.1:\(port)/postgres" }

    /// Starts the server and waits until it accepts connections.
    public func start() throws {
        let child = try lab.spawn(namespace, ["runuser", "-u", "postgres", "--", bin + "/postgres", "-D", directory + "/data", "-p", String(port),
                                              "-k", directory, "-c", "listen_addresses=\(listen)"], log: directory + "/server.log")
        process.withLock { $0 = child }
        for _ in 0..<300 {
            if try lab.run(namespace, [bin + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", String(port)]).succeeded { return }
            guard child.isRunning else { break }
            usleep(50_000)
        }
        throw LabError("PostgreSQL did not start:\n\((try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "")")
    }

    /// `kill -9` of the postmaster (a crash): the next start recovers from its write-ahead log.
    public func crash() {
        guard let child = process.withLock({ $0 }) else { return }
        // runuser forwards nothing on SIGKILL: kill the postmaster itself, by its pid file.
        if let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
           let pid = Int32(text.split(separator: "\n").first ?? "") {
            kill(pid, SIGKILL)
        }
        child.wait(timeout: 10)
        // Its backends outlive a killed postmaster for a moment; a new one refuses while they hold the memory.
        for _ in 0..<100 where (try? lab.run(namespace, ["pgrep", "-u", "postgres", "-f", directory + "/data"]))?.succeeded == true {
            _ = try? lab.run(namespace, ["pkill", "-9", "-u", "postgres", "-f", directory + "/data"])
            usleep(50_000)
        }
    }

    /// The postmaster's pid, from its pid file.
    private var postmaster: pid_t? {
        (try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8))
            .flatMap { Int32($0.split(separator: "\n").first ?? "") }
    }

    /// The postmaster and every backend it forked.
    private func processes() -> [pid_t] {
        guard let main = postmaster else { return [] }
        let children = (try? lab.run(nil, ["pgrep", "-P", String(main)]))?.stdout.split(separator: "\n").compactMap { Int32($0) } ?? []
        return [main] + children
    }

    /// `kill -STOP` of the postmaster and its backends: a database that accepts TCP connections
    /// (the kernel does) and answers nothing, as a hung host or a frozen VM.
    public func pause() {
        for pid in processes() { kill(pid, SIGSTOP) }
    }

    public func resume() {
        for pid in processes() { kill(pid, SIGCONT) }
    }

    /// A clean stop (the fast shutdown of `pg_ctl -m fast`): sessions are ended, connections refused.
    public func stop() {
        guard let child = process.withLock({ $0 }), let main = postmaster else { return }
        kill(main, SIGINT)
        child.wait(timeout: 30)
    }

    /// A backup of the database as an operator takes one (`pg_dump`, custom format).
    public func dump(to file: String) throws {
        let result = try lab.run(namespace, [bin + "/pg_dump", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-Fc", "-f", file, "postgres"])
        guard result.succeeded else { throw LabError("pg_dump failed: \(result.stderr)") }
    }

    /// That backup restored over the database, as an operator restores one (`pg_restore --clean`).
    public func restore(from file: String) throws {
        let result = try lab.run(namespace, [bin + "/pg_restore", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "--clean", "--if-exists",
                                             "--single-transaction", "-d", "postgres", file])
        guard result.succeeded else { throw LabError("pg_restore failed: \(result.stderr)") }
    }

    /// psql against the cluster; its output.
    public func psql(_ sql: String) throws -> String {
        let result = try lab.run(namespace, [bin + "/psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres",
                                             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
        guard result.succeeded else { throw LabError("psql failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The fleet topology of the integration tests, the demo and the benchmark.
///
/// ```
///  host a 192.0.2.10 ──── 192.0.2.1    server (cordon-server, PostgreSQL on its loopback, DNS 53)
///  host b 198.51.100.10 ── 198.51.100.1
///  host c 203.0.113.50 ─── 203.0.113.49   (c reaches the server at 192.0.2.1 through it)
///  host a 203.0.113.10 ── 203.0.113.20 web (a service isolation cuts off)
/// ```
public final class FleetScenario: Sendable {
    public static let serverA = "192.0.2.1", hostA = "192.0.2.10"
    public static let serverB = "198.51.100.1", hostB = "198.51.100.10"
    public static let hostWeb = "203.0.113.10", web = "203.0.113.20"
    public static let serverC = "203.0.113.49", hostC = "203.0.113.50"
    public static let port = 8443

    public let lab: Lab
    public let server: String
    public let a: String
    public let b: String
    /// A third host, for the rollouts' waves; it reaches the server at `serverA` (a name its
    /// certificate holds) through its own link.
    public let c: String
    public let webNamespace: String
    public let postgres: PostgresCluster
    /// With `replicated`: the synchronous streaming standby, in a namespace of its own.
    public let standby: PostgresCluster?
    /// What the servers are given: the primary's loopback, or with `replicated` the service
    /// address that a failover moves to the standby (`failover()`).
    public let databaseURL: String
    /// The server's data directory (ca.pem and the keys).
    public let data: String
    public let adminToken: String
    public let serverBinary: String
    public let cordonBinary: String

    /// The database's namespaces and links with `replicated`: the primary pg1 and the standby
    /// pg2 each on a link of the server's, and to each other for streaming; the service address
    /// on the primary's loopback, routed to by the server's namespace.
    public static let databaseAddress = "203.0.113.80"
    static let pg1Link = ("203.0.113.65", "203.0.113.66"), pg2Link = ("203.0.113.69", "203.0.113.70"), streamLink = ("203.0.113.73", "203.0.113.74")

    /// `replicated`: PostgreSQL as a primary and a synchronous streaming standby (issue 22's
    /// failover), durable, reached at `databaseAddress`.
    public init(lab: Lab, durableDatabase: Bool = false, replicated: Bool = false) throws {
        for (tool, package) in [("socat", "socat"), ("curl", "curl"), ("nft", "nftables")] where Lab.which(tool) == nil {
            throw LabError("missing tool \(tool): apt-get install -y \(package)")
        }
        self.lab = lab
        cordonBinary = try DiscoveryScenario.cordonBinary()
        serverBinary = (cordonBinary as NSString).deletingLastPathComponent + "/cordon-server"
        guard access(serverBinary, X_OK) == 0 else { throw LabError("cordon-server not found at \(serverBinary); run swift build first") }
        server = try lab.namespace("server")
        a = try lab.namespace("a")
        b = try lab.namespace("b")
        c = try lab.namespace("c")
        webNamespace = try lab.namespace("web")
        try lab.connect(a, ["\(Self.hostA)/24"], server, ["\(Self.serverA)/24"])
        try lab.connect(b, ["\(Self.hostB)/24"], server, ["\(Self.serverB)/24"])
        try lab.connect(a, ["\(Self.hostWeb)/24"], webNamespace, ["\(Self.web)/24"])
        try lab.connect(c, ["\(Self.hostC)/28"], server, ["\(Self.serverC)/28"])
        let route = try lab.run(c, ["ip", "route", "add", "\(Self.serverA)/32", "via", Self.serverC])
        guard route.succeeded else { throw LabError("route to the server from host c: \(route.stderr)") }
        if replicated {
            let pg1 = try lab.namespace("pg1"), pg2 = try lab.namespace("pg2")
            try lab.connect(server, ["\(Self.pg1Link.0)/30"], pg1, ["\(Self.pg1Link.1)/30"])
            try lab.connect(server, ["\(Self.pg2Link.0)/30"], pg2, ["\(Self.pg2Link.1)/30"])
            try lab.connect(pg1, ["\(Self.streamLink.0)/30"], pg2, ["\(Self.streamLink.1)/30"])
            for (namespace, command) in [(pg1, ["ip", "addr", "add", "\(Self.databaseAddress)/32", "dev", "lo"]),
                                         (server, ["ip", "route", "add", "\(Self.databaseAddress)/32", "via", Self.pg1Link.1])] {
                try lab.mustRun(namespace, command)
            }
            postgres = try PostgresCluster(lab: lab, namespace: pg1, durable: true, name: "pg1", listen: "*")
            let standby = try PostgresCluster(standbyOf: postgres, at: Self.streamLink.0, namespace: pg2, name: "pg2")
            // Synchronous: a commit is acknowledged once the standby has it, so a kill -9 of the
            // primary loses nothing acknowledged. Set on the primary alone: the promoted standby
            // has no standby to wait for.
            _ = try postgres.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            _ = try postgres.psql("SELECT pg_reload_conf()")
            var streaming = ""
            for _ in 0..<200 where streaming != "sync" {
                streaming = try postgres.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'")
                if streaming != "sync" { usleep(50_000) }
            }
            guard streaming == "sync" else { throw LabError("the standby is not streaming synchronously: \(streaming)") }
            self.standby = standby
            databaseURL = "postgresql://postgres@\(Self.databaseAddress):\(postgres.port)/postgres"
        } else {
            postgres = try PostgresCluster(lab: lab, namespace: server, durable: durableDatabase)
            standby = nil
            databaseURL = postgres.url
        }
        data = lab.directory + "/server-data"
        let initialised = try lab.run(server, [serverBinary, "init", "--data", data, "--database", databaseURL,
                                               "--name", Self.serverA, "--name", Self.serverB], timeout: 60)
        guard initialised.succeeded, let token = initialised.stdout.split(separator: "\n").last else {
            throw LabError("cordon-server init failed: \(initialised.stderr)")
        }
        adminToken = String(token)
        // A resolver on the server for each host (DNS stays open in isolation) and a web service.
        for address in [Self.serverA, Self.serverB] {
            _ = try lab.spawn(server, ["socat", "UDP4-RECVFROM:53,bind=\(address),fork", "EXEC:echo answer"])
        }
        _ = try lab.spawn(webNamespace, ["socat", "TCP4-LISTEN:443,bind=\(Self.web),reuseaddr,fork", "EXEC:cat"])
    }

    public var caFile: String { data + "/ca.pem" }

    /// The primary dies (kill -9) and the standby takes over, as an operator's runbook or a
    /// promoter does it: promoted (`pg_ctl promote`), then the service address moved to it.
    /// The servers are not told: they reconnect to the address. Returns when both are done.
    public func failover() throws {
        guard let standby, let pg1 = postgres.namespace, let pg2 = standby.namespace else { throw LabError("not a replicated scenario") }
        postgres.crash()
        try standby.promote()
        for (namespace, command) in [(pg1, ["ip", "addr", "del", "\(Self.databaseAddress)/32", "dev", "lo"]),
                                     (pg2, ["ip", "addr", "add", "\(Self.databaseAddress)/32", "dev", "lo"]),
                                     (server, ["ip", "route", "replace", "\(Self.databaseAddress)/32", "via", Self.pg2Link.1])] {
            try lab.mustRun(namespace, command)
        }
    }

    /// Starts a replica of the server; waits until it answers over HTTPS.
    /// `prefix` runs before the server's command line (`prlimit --nofile=1024 --`).
    public func startServer(port: Int = FleetScenario.port, name: String = "1", extra: [String] = [], prefix: [String] = []) throws -> Child {
        let log = lab.directory + "/server-\(name).log"
        let child = try lab.spawn(server, prefix + [serverBinary, "run", "--data", data, "--database", databaseURL, "--listen", "0.0.0.0:\(port)"] + extra,
                                  log: log)
        for _ in 0..<300 {
            if try lab.run(server, ["curl", "-sf", "--cacert", caFile, "https://\(Self.serverA):\(port)/healthz"]).succeeded { return child }
            guard child.isRunning else { break }
            usleep(50_000)
        }
        throw LabError("cordon-server did not come up:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// A new enrollment secret, in a file for `--enroll-secret-file`.
    public func enrollSecret(tags: String = "tier=test", uses: Int? = nil, hostTags: Bool = true, ttl: String? = nil,
                             extraAllow: [String] = []) throws -> String {
        var arguments = [serverBinary, "enroll-secret", "create", "--data", data, "--database", databaseURL, "--tags", tags]
        if let uses { arguments += ["--uses", String(uses)] }
        if let ttl { arguments += ["--ttl", ttl] }
        for entry in extraAllow { arguments += ["--extra-allow", entry] }
        if !hostTags { arguments += ["--no-host-tags"] }
        let result = try lab.run(server, arguments)
        guard result.succeeded, let secret = result.stdout.split(separator: "\n").last else { throw LabError("enroll-secret create: \(result.stderr)") }
        let file = lab.directory + "/enroll-\(UInt32.random(in: 0...UInt32.max)).secret"
        try String(secret).write(toFile: file, atomically: false, encoding: .utf8)
        return file
    }

    /// An enrollment posted by hand, as a client that is not a Cordon agent would: the secret from
    /// `secretFile`, `hostname` as JSON string content (escapes allowed). The status and the body.
    public func enroll(secretFile: String, hostname: String) throws -> (status: Int, body: String) {
        let secret = try String(contentsOfFile: secretFile, encoding: .utf8)
        return try api("POST", "/agent/v1/enroll", token: nil,
                       body: #"{"secret":"\#(secret)","hostname":"\#(hostname)","machine_id":"m","addresses":[],"agent_version":"t","tags":{}}"#)
    }

    /// A new API token of `role`.
    public func token(role: String, name: String) throws -> String {
        let result = try lab.run(server, [serverBinary, "token", "create", "--data", data, "--database", databaseURL, "--role", role, "--name", name])
        guard result.succeeded, let token = result.stdout.split(separator: "\n").last else { throw LabError("token create: \(result.stderr)") }
        return String(token)
    }

    public func directory(of host: String) -> String { lab.directory + "/" + (host == a ? "a" : host == c ? "c" : "b") }

    /// Starts the agent of host a, b or c, reporting to the server on its link. `hostname`: the
    /// name it enrolls with, in a UTS namespace of its own, with a machine id of its own (the
    /// hosts otherwise share the machine's).
    public func startAgent(_ host: String, secretFile: String?, port: Int = FleetScenario.port, extra: [String] = [],
                           hostname: String? = nil) throws -> Child {
        let directory = directory(of: host)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let serverAddress = host == b ? Self.serverB : Self.serverA
        var arguments = ["--db", directory + "/cordon.db", "--socket", directory + "/cordon.sock", "--flush-interval", "0.5",
                         "--server", "https://\(serverAddress):\(port)", "--server-ca", caFile, "--resolver", serverAddress]
        if let secretFile { arguments += ["--enroll-secret-file", secretFile] }
        var prefix: [String] = []
        if let hostname {
            // And a machine id of its own, as a separate machine would have.
            let machineID = directory + "/machine-id"
            try (UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "") + "\n").write(toFile: machineID, atomically: false, encoding: .utf8)
            prefix = ["unshare", "--uts", "--mount", "--", "sh", "-c", "hostname \"$0\" && mount --bind \"$1\" /etc/machine-id && shift && exec \"$@\"",
                      hostname, machineID]
        }
        return try lab.startAgent(in: host, binary: cordonBinary, arguments: arguments + extra, socket: directory + "/cordon.sock",
                                  log: directory + "/agent.log", prefix: prefix)
    }

    /// An API call from the server's namespace: the status code and the body.
    public func api(_ method: String, _ path: String, token: String?, body: String? = nil, headers: [String] = [],
                    port: Int = FleetScenario.port) throws -> (status: Int, body: String) {
        var arguments = ["curl", "-s", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}", "--cacert", caFile, "-X", method]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        for header in headers { arguments += ["-H", header] }
        var bodyFile: String?
        if let body {
            // Past what one argument may hold (128 KiB on Linux), the body goes through a file.
            if body.utf8.count > 64 << 10 {
                bodyFile = lab.directory + "/body-\(UInt32.random(in: 0...UInt32.max)).json"
                try body.write(toFile: bodyFile!, atomically: false, encoding: .utf8)
            }
            arguments += ["-H", "Content-Type: application/json", "--data-binary", bodyFile.map { "@" + $0 } ?? body]
        }
        defer { if let bodyFile { unlink(bodyFile) } }
        let result = try lab.run(server, arguments + ["https://\(Self.serverA):\(port)\(path)"])
        guard result.succeeded else { throw LabError("curl \(path): \(result.stderr)") }
        var lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.popLast() ?? "") ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    /// `cordon fleet ...` as an analyst runs it, from the server's namespace.
    public func fleet(_ arguments: [String], token: String) throws -> CommandResult {
        let tokenFile = lab.directory + "/token-\(UInt32.random(in: 0...UInt32.max))"
        try token.write(toFile: tokenFile, atomically: false, encoding: .utf8)
        defer { unlink(tokenFile) }
        return try lab.run(server, [cordonBinary, "fleet"] + arguments
                           + ["--server", "https://\(Self.serverA):\(Self.port)", "--ca", caFile, "--token-file", tokenFile], timeout: 60)
    }

    /// Holds `idle` plain TCP connections that send nothing and `slow` TLS connections that send
    /// a request head one byte a second, from one address, reopening what the server closes (at
    /// most 20,000 opens in all) for `seconds`, then only holding what it has for `hold` more
    /// seconds; then writes what it saw as JSON.
    static let floodScript = #"""
    import json, resource, socket, ssl, sys, time
    host, port, idle, slow, seconds, hold, out, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7], sys.argv[8]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
    opens = 0; closed = 0; oldest_closed = {"idle": 0.0, "slow": 0.0}
    conns = []  # [kind, socket, opened_at, bytes_sent]
    def open_one(kind):
        global opens
        if opens >= 20000: return
        opens += 1
        try:
            if kind == "idle":
                s = socket.socket(); s.setblocking(False)
                try: s.connect((host, port))
                except BlockingIOError: pass
            else:
                raw = socket.create_connection((host, port), timeout=2)
                s = ctx.wrap_socket(raw, server_hostname=host); s.setblocking(False)
            conns.append([kind, s, time.time(), 0])
        except Exception:
            pass
    start = time.time()
    for _ in range(idle): open_one("idle")
    for _ in range(slow): open_one("slow")
    with open(out + ".started", "w") as f: f.write("1")
    head = b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\n"
    while time.time() - start < seconds + hold:
        now = time.time(); alive = []
        for c in conns:
            kind, s, at, sent = c
            gone = False
            try:
                if kind == "slow" and int(now - at) > sent and sent < len(head):
                    s.send(head[sent:sent + 1]); c[3] += 1
                data = s.recv(1)
                if data == b"": gone = True
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                gone = True
            if gone:
                closed += 1; oldest_closed[kind] = max(oldest_closed[kind], now - at); s.close()
            else:
                alive.append(c)
        conns = alive
        for kind, want in (("idle", idle), ("slow", slow)) if now - start < seconds else ():
            missing = want - sum(1 for c in conns if c[0] == kind)
            for _ in range(min(missing, 200)): open_one(kind)
        time.sleep(0.25)
    now = time.time()
    report = {"opens": opens, "closed_by_server": closed, "open_at_end": len(conns),
              "oldest_open": {k: max([now - c[2] for c in conns if c[0] == k] or [0]) for k in ("idle", "slow")},
              "oldest_closed": oldest_closed}
    with open(out, "w") as f: json.dump(report, f)
    """#

    /// Starts the flood (`floodScript`) from host b's address against the server; its JSON
    /// summary goes to `report`, its output to `report.log`.
    public func startFlood(idle: Int, slow: Int, seconds: Double, hold: Double, report: String) throws -> Child {
        let script = lab.directory + "/flood.py"
        try Self.floodScript.write(toFile: script, atomically: false, encoding: .utf8)
        return try lab.spawn(b, ["python3", script, Self.serverB, String(Self.port), String(idle), String(slow), String(seconds), String(hold), report, caFile],
                             log: report + ".log")
    }
}
