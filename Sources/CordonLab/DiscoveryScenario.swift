#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The discovery topology shared by `cordon demo` and the integration tests.
///
/// ```
///  peer 192.0.2.20, 2001:db8::20 ── host 192.0.2.10, 2001:db8::10 (the agent runs here)
///                                   host 198.51.100.1 ── far 198.51.100.2 (routed through host)
/// ```
/// Real tools make the traffic: socat for TCP and UDP clients and servers, ping for ICMP.
public final class DiscoveryScenario: Sendable {
    public static let hostV4 = "192.0.2.10", peerV4 = "192.0.2.20"
    public static let hostV6 = "2001:db8::10", peerV6 = "2001:db8::20"
    public static let routerV4 = "198.51.100.1", farV4 = "198.51.100.2"

    public let lab: Lab
    public let host: String
    public let peer: String
    public let far: String

    /// Tools the scenario needs, with the Debian package of each.
    public static let requiredTools = [("socat", "socat"), ("ping", "iputils-ping"), ("nft", "nftables")]

    public static func missingTools() -> [String] {
        requiredTools.filter { Lab.which($0.0) == nil }.map(\.1)
    }

    /// Builds the namespaces and starts the servers. With `hostFirewall`, the host namespace gets a
    /// firewall of its own (as most hosts have) before any traffic, so the kernel already tracks
    /// connections that predate the agent.
    /// Without `servers`, no socat listeners start (a test bringing real daemons for those ports).
    public init(lab: Lab, hostFirewall: Bool = true, servers: Bool = true) throws {
        let missing = Self.missingTools()
        guard missing.isEmpty else {
            throw LabError("missing tools: apt-get install -y \(missing.joined(separator: " "))")
        }
        self.lab = lab
        host = try lab.namespace("host")
        peer = try lab.namespace("peer")
        far = try lab.namespace("far")
        try lab.connect(host, ["\(Self.hostV4)/24", "\(Self.hostV6)/64"], peer, ["\(Self.peerV4)/24", "\(Self.peerV6)/64"])
        try lab.connect(host, ["\(Self.routerV4)/24"], far, ["\(Self.farV4)/24"])
        try lab.run(far, ["ip", "route", "add", "default", "via", Self.routerV4])
        try lab.run(peer, ["ip", "route", "add", "198.51.100.0/24", "via", Self.hostV4])
        try lab.run(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if hostFirewall {
            let rules = """
                table inet hostfw {
                  chain input { type filter hook input priority 10; policy accept; ct state established,related accept; }
                }
                """
            let result = try lab.run(host, ["nft", "-f", "-"], input: rules)
            guard result.succeeded else { throw LabError("host firewall: \(result.stderr)") }
        }
        guard servers else { return }
        // Servers: an SSH-like port and syslog on the host; HTTPS, DNS and a web port on the peer.
        try listen(host, tcp: 22)
        try listen(host, udp: 514)
        try listen(peer, tcp: 443)
        try listen(peer, udp: 53)
        try listen(peer, tcp: 8080)
        try waitForListeners()
    }

    private func listen(_ namespace: String, tcp port: Int) throws {
        _ = try lab.spawn(namespace, ["socat", "TCP6-LISTEN:\(port),fork,reuseaddr,ipv6only=0", "PIPE"])
    }

    private func listen(_ namespace: String, udp port: Int) throws {
        _ = try lab.spawn(namespace, ["socat", "-T1", "UDP6-RECVFROM:\(port),fork,reuseaddr,ipv6only=0", "PIPE"])
    }

    private func waitForListeners() throws {
        for _ in 0..<200 {
            let hostReady = try lab.run(host, ["ss", "-Hltn", "sport = :22"]).stdout.contains(":22")
            let peerReady = try lab.run(peer, ["ss", "-Hltn", "sport = :8080"]).stdout.contains(":8080")
            if hostReady && peerReady { return }
            usleep(20_000)
        }
        throw LabError("servers did not start listening")
    }

    /// Sessions opened before the agent starts: the analyst's SSH from the peer, and an HTTPS
    /// connection the host keeps open. They stay open until the lab is cleaned up.
    public func openLongLivedSessions() throws {
        _ = try lab.spawn(peer, ["socat", "TCP:\(Self.hostV4):22", "SYSTEM:sleep 600"])
        _ = try lab.spawn(host, ["socat", "TCP:\(Self.peerV4):443", "SYSTEM:sleep 600"])
        for _ in 0..<200 {
            // Client ends: their local side is never shown as a v4-mapped address.
            let inbound = try lab.run(peer, ["ss", "-Htn", "state", "established"]).stdout
            let outbound = try lab.run(host, ["ss", "-Htn", "state", "established"]).stdout
            if inbound.contains("\(Self.hostV4):22") && outbound.contains("\(Self.peerV4):443") { return }
            usleep(20_000)
        }
        throw LabError("long-lived sessions did not establish")
    }

    /// What `driveTraffic` did, so a check can compare the record with the traffic.
    public struct Traffic: Sendable {
        public var inboundTCP22 = 0, inboundUDP514 = 0, inboundPing = 0, inboundPing6 = 0
        public var outboundTCP443 = 0, outboundUDP53 = 0, outboundPing = 0, outboundTCP443v6 = 0
        public var forwardTCP8080 = 0
    }

    /// Drives TCP, UDP and ICMP in both directions, forwarded TCP, and loopback traffic that must
    /// not be recorded. Every client is a separate process, so each is a new connection.
    public func driveTraffic(rounds: Int = 3) throws -> Traffic {
        var traffic = Traffic()
        for _ in 0..<rounds {
            try tcp(from: peer, to: Self.hostV4, port: 22); traffic.inboundTCP22 += 1
            try udp(from: peer, to: Self.hostV4, port: 514); traffic.inboundUDP514 += 1
            try tcp(from: host, to: Self.peerV4, port: 443); traffic.outboundTCP443 += 1
            try udp(from: host, to: Self.peerV4, port: 53); traffic.outboundUDP53 += 1
            try tcp(from: far, to: Self.peerV4, port: 8080); traffic.forwardTCP8080 += 1
        }
        try tcp(from: host, to: "[\(Self.peerV6)]", port: 443); traffic.outboundTCP443v6 += 1
        try ping(from: peer, to: Self.hostV4); traffic.inboundPing += 1
        try ping(from: peer, to: Self.hostV6); traffic.inboundPing6 += 1
        try ping(from: host, to: Self.peerV4); traffic.outboundPing += 1
        // Loopback: never subject to policy, never recorded.
        try tcp(from: host, to: "127.0.0.1", port: 22)
        try ping(from: host, to: "127.0.0.1")
        return traffic
    }

    public func tcp(from namespace: String, to address: String, port: Int) throws {
        let result = try lab.run(namespace, ["socat", "-T2", "-", "TCP:\(address):\(port)"], timeout: 10, input: "hello\n")
        guard result.succeeded, result.stdout.contains("hello") else {
            throw LabError("tcp to \(address):\(port) failed: \(result.stderr)")
        }
    }

    public func udp(from namespace: String, to address: String, port: Int) throws {
        let result = try lab.run(namespace, ["socat", "-T1", "-", "UDP:\(address):\(port)"], timeout: 10, input: "hello\n")
        guard result.succeeded, result.stdout.contains("hello") else {
            throw LabError("udp to \(address):\(port) failed: \(result.stderr)")
        }
    }

    public func ping(from namespace: String, to address: String) throws {
        let result = try lab.run(namespace, ["ping", "-c", "1", "-W", "2", address], timeout: 10)
        guard result.succeeded else { throw LabError("ping \(address) failed: \(result.stdout)") }
    }

    /// The `cordon` binary next to the running executable (the demo itself, or the test bundle).
    public static func cordonBinary() throws -> String {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: own).deletingLastPathComponent()
        if directory.lastPathComponent == "MacOS" || directory.pathExtension == "xctest" {
            directory = directory.deletingLastPathComponent()
        }
        let candidate = directory.appendingPathComponent("cordon").path
        guard access(candidate, X_OK) == 0 else { throw LabError("cordon binary not found at \(candidate); run swift build first") }
        return candidate
    }

    /// Where the agent's files go unless a caller says otherwise: the lab directory.
    public var database: String { lab.directory + "/cordon.db" }
    public var socket: String { lab.directory + "/cordon.sock" }
    public var agentLog: String { lab.directory + "/agent.log" }

    /// Starts the agent in the host namespace (see `Lab.startAgent`).
    public func startAgent(binary: String, database: String? = nil, socket: String? = nil, flushInterval: Double = 0.5,
                           extra: [String] = [], log: String? = nil) throws -> Child {
        let socket = socket ?? self.socket
        return try lab.startAgent(in: host, binary: binary,
                                  arguments: ["--db", database ?? self.database, "--socket", socket,
                                              "--flush-interval", String(flushInterval)] + extra,
                                  socket: socket, log: log ?? agentLog)
    }
}
