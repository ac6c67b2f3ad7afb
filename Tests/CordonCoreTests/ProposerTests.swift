import CordonCore
import Foundation
import Testing

@Suite struct ProposerTests {
    static let standardPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Rulesets/standard-networks.yaml").path
    let host = IPAddress("192.0.2.10")!

    func standard() throws -> Ruleset {
        try RulesetParser.parse(try String(contentsOfFile: Self.standardPath, encoding: .utf8), file: Self.standardPath)
    }

    let names = ServiceNames(servicesFile: """
        ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
        https\t\t443/tcp
        syslog\t\t514/udp
        x11\t\t6000/tcp\tx11-0
        """)

    func flow(_ direction: Direction, _ transport: UInt8, _ remote: String, _ service: UInt16, connections: UInt64 = 1,
              seen: Int64 = 1_795_381_548) -> (key: FlowKey, stats: FlowStats) {
        (FlowKey(direction: direction, transport: transport, local: host, remote: IPPrefix(remote)!, service: service),
         FlowStats(connections: connections, firstSeen: seen - 3600, lastSeen: seen))
    }

    var week: [(key: FlowKey, stats: FlowStats)] {
        [
            flow(.inbound, 6, "192.0.2.20", 22, connections: 3),
            flow(.inbound, 6, "198.51.100.7", 22),
            flow(.outbound, 17, "192.0.2.53", 53, connections: 40),
            flow(.outbound, 6, "192.0.2.53", 53),
            flow(.outbound, 6, "169.254.169.254", 80, connections: 2),
            flow(.outbound, 17, "198.51.100.123", 123, connections: 9),
            flow(.outbound, 17, "255.255.255.255", 67),
            flow(.inbound, 1, "192.0.2.20", 8 << 8),
            flow(.inbound, 17, "192.0.2.20", 514, connections: 5),
            flow(.outbound, 6, "203.0.113.5", 443, connections: 7),
            flow(.outbound, 6, "203.0.113.0/24", 443, connections: 70),
            flow(.outbound, 6, "2001:db8::443", 443),
            flow(.outbound, 6, "203.0.113.80", 80),  // port 80, but not the metadata address
            flow(.forward, 6, "198.51.100.200", 8080),
        ]
    }

    @Test func proposesTheStandardNetworksThatWereUsed() throws {
        let proposal = Proposer(standard: try standard(), serviceNames: names).propose(week)
        let ruleset = proposal.ruleset
        #expect(ruleset.networks.map(\.name) == ["ssh", "ntp", "dns", "dhcp", "icmp", "metadata"])
        #expect(ruleset.incoming.map(\.network) == ["ssh", "dhcp", "icmp"])
        #expect(ruleset.outgoing.map(\.network) == ["ntp", "dns", "dhcp", "icmp", "metadata"])
        // Servers are narrowed to what was seen; clients and broadcast peers stay wide.
        #expect(ruleset.network(named: "dns")?.entries == [IPPrefix("192.0.2.53")!])
        #expect(ruleset.network(named: "ntp")?.entries == [IPPrefix("198.51.100.123")!])
        #expect(ruleset.network(named: "metadata")?.entries == [IPPrefix("169.254.169.254")!])
        #expect(ruleset.network(named: "ssh")?.entries.map(\.description) == ["0.0.0.0/0", "::/0"])
        #expect(ruleset.network(named: "dns")?.services.map(\.description) == ["udp/53", "tcp/53"])
        #expect(proposal.seen["ssh"] == [IPPrefix("192.0.2.20")!, IPPrefix("198.51.100.7")!])
        #expect(proposal.connections["dns"] == 41)
    }

    @Test func leftoversAreGroupedCandidates() throws {
        let proposal = Proposer(standard: try standard(), serviceNames: names).propose(week)
        let described = proposal.candidates.map { "\($0.direction.rawValue) \($0.transport)/\($0.service) \($0.connections)" }
        #expect(described == ["forward 6/8080 1", "inbound 17/514 5", "outbound 6/80 1", "outbound 6/443 78"])
        let https = try #require(proposal.candidates.first { $0.service == 443 })
        #expect(https.remotes.map(\.description) == ["203.0.113.0/24", "203.0.113.5", "2001:db8::443"])
        #expect(ProposalText.network(for: https, names: names).name == "out-https-tcp-443")
    }

    @Test func aPeerSeenAllowedAndRefusedIsOneCandidateEntry() throws {
        var refused = flow(.outbound, 6, "203.0.113.5", 8443, connections: 2)
        refused.key.verdict = .rejected
        let proposal = Proposer(standard: try standard(), serviceNames: names).propose([flow(.outbound, 6, "203.0.113.5", 8443), refused])
        let candidate = try #require(proposal.candidates.first { $0.service == 8443 })
        #expect(candidate.remotes.map(\.description) == ["203.0.113.5"])
        #expect(candidate.connections == 3)
    }

    @Test func theFileIsAValidRulesetAndCandidatesUncommentIntoOne() throws {
        let proposal = Proposer(standard: try standard(), serviceNames: names).propose(week)
        let text = ProposalText.render(proposal, names: names, flowCount: week.count, firstSeen: 0, lastSeen: 1)
        let parsed = try RulesetParser.parse(text, file: "proposed.yaml")
        #expect(parsed.networks == proposal.ruleset.networks)
        #expect(parsed.incoming.map(\.network) == proposal.ruleset.incoming.map(\.network))
        #expect(parsed.outgoing.map(\.network) == proposal.ruleset.outgoing.map(\.network))
        #expect(text.contains("# Hardening: these entries allow anywhere"))
        #expect(text.contains("inbound udp/514 (syslog): 5 connections from 192.0.2.20"))
        #expect(text.contains("# Forwarded through this host"))

        // An analyst uncomments the candidate blocks: the result is valid and allows them.
        let uncommented = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            line.hasPrefix("  # - ") || line.hasPrefix("  #   ") ? "  " + line.dropFirst(4) : String(line)
        }.joined(separator: "\n")
        let allowed = try RulesetParser.parse(uncommented, file: "edited.yaml")
        #expect(allowed.network(named: "in-syslog-udp-514")?.services == [.ports(transport: 17, range: 514...514)])
        #expect(allowed.network(named: "out-https-tcp-443")?.entries.map(\.description) == ["203.0.113.0/24", "203.0.113.5", "2001:db8::443"])
        #expect(allowed.incoming.map(\.network).contains("in-syslog-udp-514"))
        #expect(allowed.outgoing.map(\.network).contains("out-http-tcp-80") == false)
        #expect(allowed.outgoing.map(\.network).contains("out-tcp-80"))
    }

    @Test func proposingTwiceFromTheSameDataGivesTheSameFile() throws {
        let proposer = Proposer(standard: try standard(), serviceNames: names)
        let first = ProposalText.render(proposer.propose(week), names: names, flowCount: 14, firstSeen: 0, lastSeen: 1)
        let second = ProposalText.render(proposer.propose(week.reversed()), names: names, flowCount: 14, firstSeen: 0, lastSeen: 1)
        #expect(first == second)
    }

    @Test func serviceNamesComeFromServicesFile() {
        #expect(names.name(transport: 6, port: 22) == "ssh")
        #expect(names.name(transport: 17, port: 514) == "syslog")
        #expect(names.name(transport: 6, port: 514) == nil)
        #expect(names.name(transport: 6, port: 6000) == "x11")
    }

    @Test func emptyRuleListsParse() throws {
        let ruleset = try RulesetParser.parse("networks:\n  - name: a\n    entries: [192.0.2.1]\n    services: [tcp/1]\nincoming:\noutgoing:\n",
                                              file: "x.yaml")
        #expect(ruleset.incoming.isEmpty && ruleset.outgoing.isEmpty)
    }
}

@Suite struct InteractiveReviewTests {
    let host = IPAddress("192.0.2.10")!

    @Test func allowedCandidatesRoundTripThroughTheRulesetText() throws {
        let base = try RulesetParser.parse("networks:\n  - name: dns\n    entries: [192.0.2.53]\n    services: [udp/53]\noutgoing:\n  - to: dns\n",
                                           file: "base.yaml")
        let flows: [(key: FlowKey, stats: FlowStats)] = [
            (FlowKey(direction: .inbound, transport: 17, local: host, remote: IPPrefix("192.0.2.20")!, service: 514),
             FlowStats(connections: 3, firstSeen: 0, lastSeen: 10)),
            (FlowKey(direction: .inbound, transport: 17, local: host, remote: IPPrefix("2001:db8::20")!, service: 514),
             FlowStats(connections: 1, firstSeen: 0, lastSeen: 12)),
            (FlowKey(direction: .outbound, transport: 6, local: host, remote: IPPrefix("203.0.113.5")!, service: 443),
             FlowStats(connections: 1, firstSeen: 0, lastSeen: 11)),
        ]
        let candidates = Leftovers.candidates(Review(ruleset: base, flows: flows))
        #expect(candidates.map(\.service) == [514, 443])
        #expect(candidates.first?.connections == 4)
        var result = base
        Leftovers.allow(candidates[0], narrowed: true, in: &result, names: ServiceNames())
        Leftovers.allow(candidates[1], narrowed: false, in: &result, names: ServiceNames())
        Leftovers.allow(candidates[1], narrowed: false, in: &result, names: ServiceNames())  // a second time: a new name
        let reparsed = try RulesetParser.parse(RulesetText.render(result, header: ["test"]), file: "out.yaml")
        #expect(reparsed == result)
        #expect(result.network(named: "in-udp-514")?.entries.map(\.description) == ["192.0.2.20", "2001:db8::20"])
        #expect(result.network(named: "out-tcp-443")?.entries.map(\.description) == ["0.0.0.0/0", "::/0"])
        #expect(result.network(named: "out-tcp-443-2") != nil)
        #expect(result.incoming.map(\.network) == ["in-udp-514"])
        #expect(Review(ruleset: result, flows: flows).rejected.isEmpty)
    }
}
