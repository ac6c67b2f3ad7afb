#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A host, a real resolver serving a zone the test controls, and servers behind every address
/// of that zone: the topology of the DNS-name tests, the demo's name rule and the DNS benchmarks.
///
/// ```
///  host 192.0.2.10, 2001:db8::10 ── net: dnsmasq on 192.0.2.53 and 2001:db8::53,
///                                        a non-resolver on 192.0.2.66,
///                                        every address of 203.0.113.0/24, 198.51.100.0/24 and 2001:db8:cafe::/64
///                                        (local routes), with socat echo servers on 443 and 80
/// ```
/// The host's resolv.conf names the resolver (`ip netns exec` mounts it), so glibc clients —
/// `getent`, socat connecting by name — look up and connect as any program does.
public final class NameScenario: Sendable {
    public static let hostV4 = "192.0.2.10", hostV6 = "2001:db8::10"
    public static let resolverV4 = "192.0.2.53", resolverV6 = "2001:db8::53"
    public static let forgerV4 = "192.0.2.66"
    /// Server addresses: any address of these prefixes answers on the net side.
    public static let serversV4 = ["203.0.113.0/24", "198.51.100.0/24"], serversV6 = "2001:db8:cafe::/64"
    public static let ports = [443, 80]

    public let lab: Lab
    public let host: String
    public let net: String
    /// The zone's hosts file (address name), read by dnsmasq at start and on SIGHUP.
    public let zoneFile: String
    private let resolverArguments: [String]
    private let resolver: Mutex<Child?>

    public static let requiredTools = [("socat", "socat"), ("dnsmasq", "dnsmasq-base"), ("getent", "libc-bin"), ("nft", "nftables")]

    public static func missingTools() -> [String] {
        requiredTools.filter { Lab.which($0.0) == nil }.map(\.1)
    }

    /// - Parameters:
    ///   - zone: `address name` lines, the zone's hosts file (TTL `hostsTTL`).
    ///   - records: extra dnsmasq options: `--host-record=name,address,ttl`, `--cname=alias,target,ttl`.
    ///   - resolvers: the host's resolv.conf (`resolverV4` by default).
    /// Files of this scenario in the lab directory start with it (the demo runs several scenarios in one lab).
    public let prefix: String

    ///   - prefix: before the namespaces' roles and the files' names, when other scenarios share the lab.
    public init(lab: Lab, zone: [String] = [], records: [String] = [], hostsTTL: Int = 300,
                resolvers: [String] = [NameScenario.resolverV4], prefix: String = "", servers: Bool = true) throws {
        let missing = Self.missingTools()
        guard missing.isEmpty else { throw LabError("missing tools: apt-get install -y \(missing.joined(separator: " "))") }
        self.lab = lab
        self.prefix = prefix
        host = try lab.namespace(prefix + "host")
        net = try lab.namespace(prefix + "net")
        try lab.connect(host, ["\(Self.hostV4)/24", "\(Self.hostV6)/64"],
                        net, ["\(Self.resolverV4)/24", "\(Self.forgerV4)/24", "\(Self.resolverV6)/64"])
        for prefix in Self.serversV4 {
            try lab.run(net, ["ip", "route", "add", "local", prefix, "dev", "lo"])
            try lab.run(host, ["ip", "route", "add", prefix, "via", Self.resolverV4])
        }
        try lab.run(net, ["ip", "-6", "route", "add", "local", Self.serversV6, "dev", "lo"])
        try lab.run(host, ["ip", "-6", "route", "add", Self.serversV6, "via", Self.resolverV6])
        try lab.setResolvers(host, resolvers)
        zoneFile = lab.directory + "/\(prefix)zone.hosts"
        try (zone.joined(separator: "\n") + "\n").write(toFile: zoneFile, atomically: true, encoding: .utf8)
        resolverArguments = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                             "--addn-hosts=\(zoneFile)", "--local-ttl=\(hostsTTL)", "--listen-address=\(Self.resolverV4),\(Self.resolverV6)",
                             "--bind-interfaces", "--except-interface=lo", "--pid-file=", "--user=root", "--log-queries",
                             "--log-facility=-", "--cache-size=0"] + records
        resolver = Mutex(nil)
        try startResolver()
        // Without `servers` the caller brings its own listeners (a benchmark's, that does not fork).
        if servers {
            for port in Self.ports {
                _ = try lab.spawn(net, ["socat", "TCP6-LISTEN:\(port),fork,reuseaddr,ipv6only=0,backlog=1024", "PIPE"])
            }
        }
        for _ in 0..<200 {
            let dns = try lab.run(net, ["ss", "-Hlun", "sport = :53"]).stdout
            let web = try lab.run(net, ["ss", "-Hltn", "sport = :80"]).stdout
            if dns.contains(Self.resolverV4), web.contains(":80") || !servers { return }
            usleep(20_000)
        }
        throw LabError("the resolver or the servers did not start listening")
    }

    /// (Re)starts dnsmasq, reading the zone file afresh.
    public func startResolver() throws {
        try resolver.withLock { current in
            if let current { lab.stop(current, signal: SIGKILL) }
            current = try lab.spawn(net, resolverArguments, log: lab.directory + "/\(prefix)dnsmasq.log")
        }
    }

    /// Replaces the zone's hosts file and makes the resolver read it (SIGHUP).
    public func setZone(_ zone: [String]) throws {
        try (zone.joined(separator: "\n") + "\n").write(toFile: zoneFile, atomically: true, encoding: .utf8)
        resolver.withLock { $0?.signal(SIGHUP) }
        usleep(200_000)
    }

    /// The addresses the host's resolver gives for `name` (glibc, as a program would see them).
    public func lookup(_ name: String, family: String = "ahosts") throws -> [String] {
        let result = try lab.run(host, ["getent", family, name], timeout: 15)
        guard result.succeeded else { return [] }
        var seen: [String] = []
        for line in result.stdout.split(separator: "\n") {
            if let address = line.split(separator: " ").first.map(String.init), !seen.contains(address) { seen.append(address) }
        }
        return seen
    }

    /// A program that looks `name` up and connects to it at once (socat resolves with glibc):
    /// true when the echo came back.
    @discardableResult
    public func connect(_ name: String, port: Int = 443, family: String = "TCP") throws -> Bool {
        let result = try lab.run(host, ["socat", "-T2", "-", "\(family):\(name):\(port),connect-timeout=3"], timeout: 10, input: "hello\n")
        return result.succeeded && result.stdout.contains("hello")
    }

    public var database: String { lab.directory + "/\(prefix)cordon.db" }
    public var socket: String { lab.directory + "/\(prefix)cordon.sock" }
    public var agentLog: String { lab.directory + "/\(prefix)agent.log" }

    public func startAgent(binary: String, flushInterval: Double = 0.5, extra: [String] = []) throws -> Child {
        try lab.startAgent(in: host, binary: binary,
                           arguments: ["--db", database, "--socket", socket, "--flush-interval", String(flushInterval)] + extra,
                           socket: socket, log: agentLog)
    }
}
