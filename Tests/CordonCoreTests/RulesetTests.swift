import CordonCore
import Foundation
import Testing

@Suite struct RulesetTests {
    static let example = """
        name: web-frontends
        description: Front-end web servers.
        appliesTo:
          agents: [web-01]
          tags: [web, prod]
        networks:
          - name: ssh
            comment: bastions
            entries: [198.51.100.0/24, "2001:db8::/32"]
            services: [tcp/22]
          - name: dns
            entries: [192.0.2.53]
            services: [udp/53, tcp/53]
          - name: icmp
            entries: [0.0.0.0/0, "::/0"]
            services: [icmp/8/0, icmp/3, icmpv6]
        incoming:
          - from: ssh
            comment: admins only
          - from: icmp
        outgoing:
          - to: dns
        """

    func error(_ text: String) throws -> RulesetError {
        try #require(throws: RulesetError.self) { try RulesetParser.parse(text, file: "web.yaml") }
    }

    @Test("nesting deeper than the limit is refused with its place, however it is written")
    func deepNestingIsRefusedBeforeTheYAMLLibraryRecurses() throws {
        let flow = "networks: " + String(repeating: "[", count: 7000) + String(repeating: "]", count: 7000) + "\n"
        let flowError = try error(flow)
        #expect(flowError.line == 1 && flowError.column == 10 + YAMLDepth.limit && flowError.message.contains("nested deeper"), "\(flowError)")
        let dashes = "networks:\n" + String(repeating: "- ", count: 7000) + "x\n"
        #expect(try error(dashes).line == 2)
        let indented = (0..<100).map { String(repeating: " ", count: $0) + "k\($0):" }.joined(separator: "\n") + " x\n"
        #expect(try error(indented).line == YAMLDepth.limit + 1)
        // Brackets in quotes and comments are text; a real file is far from the limit.
        let quoted = "name: \"" + String(repeating: "[", count: 100) + "\" # " + String(repeating: "{", count: 100) + "\n"
        #expect(YAMLDepth.firstTooDeep(quoted) == nil)
        #expect(YAMLDepth.firstTooDeep(Self.example) == nil)
        #expect(YAMLDepth.firstTooDeep("a: 'it''s [[['\nb: \"\\\" [[[\"\n", limit: 1) == nil)
    }

    @Test func parsesAFullRuleset() throws {
        let ruleset = try RulesetParser.parse(Self.example, file: "web.yaml")
        #expect(ruleset.name == "web-frontends")
        #expect(ruleset.appliesTo == HostSelector(agents: ["web-01"], tags: ["web", "prod"]))
        #expect(ruleset.networks.map(\.name) == ["ssh", "dns", "icmp"])
        #expect(ruleset.network(named: "ssh")?.entries.map(\.description) == ["198.51.100.0/24", "2001:db8::/32"])
        #expect(ruleset.network(named: "dns")?.entries == [IPPrefix("192.0.2.53")!])
        #expect(ruleset.network(named: "dns")?.services.map(\.description) == ["udp/53", "tcp/53"])
        #expect(ruleset.network(named: "icmp")?.services == [.icmp(transport: 1, type: 8, code: 0), .icmp(transport: 1, type: 3, code: nil),
                                                            .icmp(transport: 58, type: nil, code: nil)])
        #expect(ruleset.incoming == [Rule(network: "ssh", comment: "admins only"), Rule(network: "icmp")])
        #expect(ruleset.outgoing == [Rule(network: "dns")])
    }

    @Test func unknownFieldNamesFileLineAndField() throws {
        let e = try error(Self.example.replacingOccurrences(of: "    services: [udp/53, tcp/53]", with: "    service: [udp/53, tcp/53]"))
        #expect(e.file == "web.yaml")
        #expect(e.line == 13)
        #expect(e.field == "networks[1].service")
        #expect(e.message.contains("valid here: name, comment, usage, entries, services"))
        #expect(e.description.hasPrefix("web.yaml:13:5: networks[1].service: "))
    }

    @Test("numbers with a sign or a leading zero, IPv4-mapped IPv6 and ICMP of a family the network lacks are refused")
    func looseFormsAreRefused() throws {
        for (written, field) in [("198.51.100.0/+24", "networks[0].entries[0]"), ("198.51.100.0/024", "networks[0].entries[0]"),
                                 ("\"::ffff:192.0.2.1\"", "networks[0].entries[0]")] {
            let e = try error(Self.example.replacingOccurrences(of: "198.51.100.0/24", with: written))
            #expect(e.field == field, "\(written): \(e)")
        }
        #expect(try error(Self.example.replacingOccurrences(of: "198.51.100.0/24", with: "\"::ffff:192.0.2.1\""))
            .message.contains("IPv4 address written as IPv6"))
        for written in ["tcp/+22", "tcp/022", "tcp/22-+23"] {
            let e = try error(Self.example.replacingOccurrences(of: "services: [tcp/22]", with: "services: [\(written)]"))
            #expect(e.field == "networks[0].services[0]", "\(written): \(e)")
        }
        let e = try error(Self.example.replacingOccurrences(of: "entries: [0.0.0.0/0, \"::/0\"]", with: "entries: [0.0.0.0/0]"))
        #expect(e.field == "networks[2].services[2]" && e.message.contains("needs an ipv6 entry"), "\(e)")
        #expect(e.line == 16)
    }

    @Test func badCIDRIsExplained() throws {
        let e = try error(Self.example.replacingOccurrences(of: "198.51.100.0/24", with: "198.51.100.7/24"))
        #expect(e.line == 9)
        #expect(e.field == "networks[0].entries[0]")
        #expect(e.message.contains("did you mean 198.51.100.0/24"))
        let f = try error(Self.example.replacingOccurrences(of: "192.0.2.53", with: "192.0.2.530"))
        #expect(f.field == "networks[1].entries[0]")
        #expect(f.message.contains("not an IPv4 or IPv6 address"))
        let g = try error(Self.example.replacingOccurrences(of: "198.51.100.0/24", with: "198.51.100.0/33"))
        #expect(g.message.contains("prefix length must be 0-32"))
    }

    @Test(arguments: [("tcp/70000", "ports must be 0-65535"), ("tcp/90-80", "low <= high"), ("tcp", "give a port or range"),
                      ("gre/1", "unknown protocol"), ("icmp/300", "ICMP services"), ("6/22", "unknown protocol")])
    func badServiceIsExplained(_ service: String, _ explanation: String) throws {
        let e = try error(Self.example.replacingOccurrences(of: "services: [tcp/22]", with: "services: [\"\(service)\"]"))
        #expect(e.field == "networks[0].services[0]")
        #expect(e.line == 10)
        #expect(e.message.contains(explanation), "\(e.message)")
    }

    @Test func ruleNamingAnUnknownNetworkIsRefused() throws {
        let e = try error(Self.example.replacingOccurrences(of: "  - to: dns", with: "  - to: ntp"))
        #expect(e.field == "outgoing[0].to")
        #expect(e.line == 22)
        #expect(e.message.contains("unknown network 'ntp'; defined networks: ssh, dns, icmp"))
    }

    @Test func wrongRuleKeyForTheDirectionIsRefused() throws {
        let e = try error(Self.example.replacingOccurrences(of: "  - to: dns", with: "  - from: dns"))
        #expect(e.field == "outgoing[0].from")
        #expect(e.message.contains("valid here: to, comment"))
    }

    @Test func duplicateNetworkIsRefused() throws {
        let e = try error(Self.example.replacingOccurrences(of: "  - name: dns", with: "  - name: ssh"))
        #expect(e.field == "networks[1].name")
        #expect(e.message.contains("already defined on line 7"))
    }

    @Test func missingPartsAreNamed() throws {
        #expect(try error("name: x\n").field == "networks")
        #expect(try error("networks:\n  - name: a\n    services: [tcp/1]\n").field == "networks[0].entries")
        #expect(try error("networks:\n  - name: a\n    entries: [192.0.2.1]\n").field == "networks[0].services")
        #expect(try error("networks:\n  - name: Bad Name\n    entries: [192.0.2.1]\n    services: [tcp/1]\n").message.contains("not a valid name"))
        #expect(try error("networks: [\n").message.contains("not valid YAML"))
    }

    @Test func limitsAreEnforced() throws {
        let services = (0...RulesetLimits.servicesPerNetwork).map { "tcp/\($0)" }.joined(separator: ", ")
        let e = try error("networks:\n  - name: a\n    entries: [192.0.2.1]\n    services: [\(services)]\n")
        #expect(e.message.contains("at most \(RulesetLimits.servicesPerNetwork) allowed"))
    }

    @Test func matchingUsesEntriesAndServices() throws {
        let ruleset = try RulesetParser.parse(Self.example, file: "web.yaml")
        let ssh = try #require(ruleset.network(named: "ssh"))
        #expect(ssh.contains(remote: IPPrefix("198.51.100.9")!, transport: 6, service: 22))
        #expect(!ssh.contains(remote: IPPrefix("198.51.101.9")!, transport: 6, service: 22))
        #expect(!ssh.contains(remote: IPPrefix("198.51.100.9")!, transport: 6, service: 23))
        #expect(!ssh.contains(remote: IPPrefix("198.51.100.9")!, transport: 17, service: 22))
        // A rolled-up remote is inside a network only if the whole prefix is.
        #expect(ssh.contains(remote: IPPrefix("198.51.100.0/25")!, transport: 6, service: 22))
        #expect(!ssh.contains(remote: IPPrefix("198.51.0.0/16")!, transport: 6, service: 22))
        let icmp = try #require(ruleset.network(named: "icmp"))
        #expect(icmp.contains(remote: IPPrefix("203.0.113.1")!, transport: 1, service: 8 << 8))
        #expect(icmp.contains(remote: IPPrefix("203.0.113.1")!, transport: 1, service: 3 << 8 | 4))
        #expect(!icmp.contains(remote: IPPrefix("203.0.113.1")!, transport: 1, service: 13 << 8))
    }

    @Test func hostSelectors() {
        #expect(HostSelector().matches(agent: "any", tags: []))
        let selector = HostSelector(agents: ["web-01"], tags: ["web", "prod"])
        #expect(selector.matches(agent: "web-01", tags: []))
        #expect(selector.matches(agent: "web-02", tags: ["web", "prod", "eu"]))
        #expect(!selector.matches(agent: "web-02", tags: ["web"]))
    }

    /// The shipped standard networks: valid, and exactly the services of the design brief.
    @Test func standardNetworksAreTheDesignedOnes() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Rulesets/standard-networks.yaml").path
        let ruleset = try RulesetParser.parse(try String(contentsOfFile: path, encoding: .utf8), file: path)
        func services(_ name: String) -> [String] { ruleset.network(named: name)?.services.map(\.description) ?? [] }
        #expect(ruleset.networks.map(\.name) == ["ssh", "ntp", "dns", "dhcp", "ldap", "icmp", "metadata"])
        #expect(services("ssh") == ["tcp/22"])
        #expect(services("ntp") == ["udp/123"])
        #expect(services("dns") == ["udp/53", "tcp/53"])
        #expect(services("dhcp") == ["udp/67-68", "udp/546-547"])
        #expect(services("ldap") == ["tcp/389", "tcp/636", "tcp/3268", "tcp/3269"])
        #expect(services("icmp") == ["icmp/8/0", "icmp/0/0", "icmp/11/0", "icmp/3/4", "icmpv6/128", "icmpv6/129", "icmpv6/2", "icmpv6/3", "icmpv6/1"])
        #expect(services("metadata") == ["tcp/80"])
        #expect(ruleset.network(named: "metadata")?.entries == [IPPrefix("169.254.169.254/32")!])
        #expect(ruleset.networks.allSatisfy { ($0.comment ?? "").count > 40 }, "each says why a host needs it")
        #expect(ruleset.network(named: "ssh")?.usage == .incoming)
        #expect(ruleset.network(named: "dhcp")?.usage == .both)
    }
}
