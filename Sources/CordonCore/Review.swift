/// What enforcing a ruleset would do to the recorded traffic, and what could lock the owner out.
public struct Review: Sendable {
    /// A recorded flow and the rule that allows it (`incoming:ssh`, `outgoing:dns`, or `always: …`).
    public struct Allowed: Sendable {
        public var key: FlowKey
        public var stats: FlowStats
        public var rule: String
    }

    public struct Risk: Hashable, Sendable, Codable {
        public enum Kind: String, Hashable, Sendable, Codable { case ssh, dhcp, dns, metadata }
        public var kind: Kind
        public var message: String
    }

    /// Facts about the host beyond the recorded flows.
    public struct Context: Sendable {
        /// The host's resolvers: the agent's configured ones, else the nameservers of
        /// /etc/resolv.conf (loopback stubs excluded by the caller).
        public var resolvers: [IPAddress] = []
        /// A DHCP client process is running.
        public var dhcpClientRunning = false
        /// Inbound sessions open right now that an operator may be using (from $SSH_CONNECTION and
        /// the live conntrack table): the local port and the remote address.
        public var liveSessions: [(port: UInt16, remote: IPAddress, local: IPAddress)] = []
        /// Resolvers the agent's management channel allows whatever the ruleset says (from the
        /// channel it last installed); they are no risk.
        public var managementResolvers: [IPAddress] = []
        public init() {}
    }

    public var allowed: [Allowed] = []
    public var rejected: [(key: FlowKey, stats: FlowStats)] = []
    /// Forwarded flows: not governed by a host ruleset.
    public var forwarded: [(key: FlowKey, stats: FlowStats)] = []
    public var risks: [Risk] = []
    /// The names of the flows, as given: for showing them with the flows.
    public var names: [FlowKey: [String]] = [:]

    /// A flow as `flows --json` shows it, with its names.
    public func record(_ key: FlowKey, _ stats: FlowStats) -> FlowRecord {
        FlowRecord(key: key, stats: stats, remoteNames: names[key] ?? [])
    }

    /// ICMPv6 neighbour discovery and MLD: always allowed while enforcing (a host without them
    /// loses its IPv6 neighbours).
    public static let alwaysAllowedICMPv6Types: Set<UInt8> = [133, 134, 135, 136, 141, 142, 143]

    /// - Parameter names: the names each flow's connections were looked up by (`remote_names`):
    ///   a flow is allowed by a name entry when one of them matches it.
    public init(ruleset: Ruleset, flows: [(key: FlowKey, stats: FlowStats)], names: [FlowKey: [String]] = [:], context: Context = Context()) {
        let rules = CompiledRules(ruleset)
        self.names = names
        for (key, stats) in flows {
            if key.direction == .forward {
                forwarded.append((key, stats))
            } else if let rule = rules.rule(allowing: key, names: names[key] ?? []) {
                allowed.append(Allowed(key: key, stats: stats, rule: rule))
            } else {
                rejected.append((key, stats))
            }
        }
        risks = Self.risks(rules, flows: flows, context: context)
    }

    /// The rules of a ruleset in evaluation order, each with its network ready for matching.
    public struct CompiledRules: Sendable {
        let incoming: [(title: String, matcher: NetworkMatcher)]
        let outgoing: [(title: String, matcher: NetworkMatcher)]

        public init(_ ruleset: Ruleset) {
            var matchers: [String: NetworkMatcher] = [:]
            for network in ruleset.networks { matchers[network.name] = NetworkMatcher(network) }
            incoming = ruleset.incoming.compactMap { rule in matchers[rule.network].map { ("incoming:\(rule.network)", $0) } }
            outgoing = ruleset.outgoing.compactMap { rule in matchers[rule.network].map { ("outgoing:\(rule.network)", $0) } }
        }

        /// The first rule that allows a flow, as text, or nil.
        public func rule(allowing key: FlowKey, names: [String] = []) -> String? {
            if key.transport == IPProtocolNumber.icmpv6, let type = key.icmpType, alwaysAllowedICMPv6Types.contains(type) {
                return "always: neighbour discovery"
            }
            let rules = key.direction == .inbound ? incoming : outgoing
            return rules.first { $0.matcher.contains(remote: key.remote, names: names, transport: key.transport, service: key.service) }?.title
        }

        func allows(_ direction: Direction, _ transport: UInt8, _ port: UInt16, _ remote: IPAddress, local: IPAddress) -> Bool {
            rule(allowing: FlowKey(direction: direction, transport: transport, local: local, remote: IPPrefix(remote), service: port)) != nil
        }
    }

    static func risks(_ rules: CompiledRules, flows: [(key: FlowKey, stats: FlowStats)], context: Context) -> [Risk] {
        var risks: [Risk] = []
        func rejected(_ match: (FlowKey) -> Bool) -> [FlowKey] {
            flows.map(\.key).filter { $0.direction != .forward && match($0) && rules.rule(allowing: $0) == nil }
        }
        // SSH: recorded inbound SSH, and the sessions open now.
        let ssh = rejected { $0.direction == .inbound && $0.transport == IPProtocolNumber.tcp && $0.service == 22 }
        let sessions = context.liveSessions.filter {
            !rules.allows(.inbound, IPProtocolNumber.tcp, $0.port, $0.remote, local: $0.local)
        }
        if !ssh.isEmpty || !sessions.isEmpty {
            var parts: [String] = []
            if !ssh.isEmpty { parts.append("inbound SSH was recorded from \(list(ssh.map(\.remote.description))) and would be rejected") }
            var described = Set<String>()
            for session in sessions where described.insert("\(session.remote) \(session.port)").inserted {
                parts.append("the session open now from \(session.remote) to port \(session.port) would be cut off")
            }
            risks.append(Risk(kind: .ssh, message: parts.joined(separator: "; ") + ": you could lock yourself out"))
        }
        // DHCP: leases must renew.
        let dhcpFlows = flows.map(\.key).filter {
            $0.direction != .forward && $0.transport == IPProtocolNumber.udp && [67, 68, 546, 547].contains($0.service)
        }
        let dhcpInUse = context.dhcpClientRunning || !dhcpFlows.isEmpty
        let anywhere4 = IPAddress("255.255.255.255")!, local4 = IPAddress("0.0.0.0")!
        let dhcpOK = rules.allows(.outbound, IPProtocolNumber.udp, 67, anywhere4, local: local4)
            && rules.allows(.inbound, IPProtocolNumber.udp, 68, dhcpFlows.first { $0.direction == .inbound }?.remote.address ?? anywhere4,
                      local: local4)
        if dhcpInUse && !dhcpOK {
            let why = context.dhcpClientRunning ? "a DHCP client is running" : "DHCP traffic was recorded"
            risks.append(Risk(kind: .dhcp, message: "\(why) but DHCP (udp/67 out and udp/68 in) is not allowed: the host would lose its address at the next renewal"))
        }
        // DNS: every configured resolver.
        let blocked = context.resolvers.filter { resolver in
            !context.managementResolvers.contains(resolver) && !rules.allows(.outbound, IPProtocolNumber.udp, 53, resolver, local: resolver.family == .ipv4 ? local4 : IPAddress("::")!)
        }
        if !blocked.isEmpty {
            risks.append(Risk(kind: .dns, message: "the configured resolver\(blocked.count == 1 ? "" : "s") \(list(blocked.map(\.description))) would be unreachable on udp/53: name resolution would fail"))
        }
        // Cloud metadata.
        let metadata = rejected { $0.direction == .outbound && $0.transport == IPProtocolNumber.tcp && $0.service == 80
            && $0.remote.contains(IPAddress("169.254.169.254")!) }
        if !metadata.isEmpty {
            risks.append(Risk(kind: .metadata, message: "the cloud metadata endpoint 169.254.169.254:80 was used and would be rejected: cloud agents would lose credentials and configuration"))
        }
        return risks
    }

    static func list(_ items: [String]) -> String {
        let unique = Array(Set(items)).sorted()
        return unique.count > 5 ? unique.prefix(5).joined(separator: ", ") + " and \(unique.count - 5) more" : unique.joined(separator: ", ")
    }
}

extension Review {
    /// Reads nameservers from resolv.conf text, skipping loopback stubs (127.0.0.53 and the like
    /// are served locally; their upstreams are not in this file).
    public static func resolvers(resolvConf text: String) -> [IPAddress] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver", let address = IPAddress(String(fields[1])), !address.isLoopback else { return nil }
            return address
        }
    }

    /// The server side of `$SSH_CONNECTION` ("client-ip client-port server-ip server-port").
    public static func sshSession(environment value: String?) -> (port: UInt16, remote: IPAddress, local: IPAddress)? {
        guard let fields = value?.split(separator: " "), fields.count == 4,
              let remote = IPAddress(String(fields[0])), let local = IPAddress(String(fields[2])), let port = UInt16(fields[3])
        else { return nil }
        return (port, remote, local)
    }
}
