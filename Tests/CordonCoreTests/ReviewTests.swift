import CordonAgent
import CordonCore
import Testing

@Suite struct ReviewTests {
    let host = IPAddress("192.0.2.10")!

    func flow(_ direction: Direction, _ transport: UInt8, _ remote: String, _ service: UInt16) -> (key: FlowKey, stats: FlowStats) {
        (FlowKey(direction: direction, transport: transport, local: host, remote: IPPrefix(remote)!, service: service),
         FlowStats(connections: 2, firstSeen: 0, lastSeen: 10))
    }

    func ruleset(_ yaml: String) throws -> Ruleset { try RulesetParser.parse(yaml, file: "test.yaml") }

    static let base = """
        networks:
          - name: ssh
            entries: [198.51.100.0/24]
            services: [tcp/22]
          - name: dns
            entries: [192.0.2.53]
            services: [udp/53, tcp/53]
          - name: dhcp
            entries: [0.0.0.0/0]
            services: [udp/67-68]
        incoming:
          - from: ssh
          - from: dhcp
        outgoing:
          - to: dns
          - to: dhcp
        """

    @Test func splitsFlowsIntoAllowedRejectedAndForwarded() throws {
        let flows = [flow(.inbound, 6, "198.51.100.7", 22), flow(.inbound, 6, "203.0.113.9", 22), flow(.outbound, 17, "192.0.2.53", 53),
                     flow(.outbound, 6, "192.0.2.53", 443), flow(.forward, 6, "198.51.100.7", 80),
                     flow(.inbound, 58, "2001:db8::1", 135 << 8)]
        let review = Review(ruleset: try ruleset(Self.base), flows: flows)
        #expect(review.allowed.map(\.rule) == ["incoming:ssh", "outgoing:dns", "always: neighbour discovery"])
        #expect(review.rejected.map(\.key.remote.description) == ["203.0.113.9", "192.0.2.53"])
        #expect(review.forwarded.count == 1)
    }

    @Test func sshRecordedButNotAllowedIsARisk() throws {
        let review = Review(ruleset: try ruleset(Self.base), flows: [flow(.inbound, 6, "203.0.113.9", 22)])
        #expect(review.risks.map(\.kind) == [.ssh])
        #expect(review.risks.first?.message.contains("203.0.113.9") == true)
    }

    @Test func theSessionOpenNowIsARiskWhenCutOff() throws {
        var context = Review.Context()
        context.liveSessions = [Review.sshSession(environment: "203.0.113.50 51000 192.0.2.10 2222")!]
        let review = Review(ruleset: try ruleset(Self.base), flows: [], context: context)
        #expect(review.risks.map(\.kind) == [.ssh])
        #expect(review.risks.first?.message.contains("from 203.0.113.50 to port 2222") == true)
        context.liveSessions = [Review.sshSession(environment: "198.51.100.9 51000 192.0.2.10 22")!]
        #expect(Review(ruleset: try ruleset(Self.base), flows: [], context: context).risks.isEmpty)
    }

    @Test func dhcpInUseButNotAllowedIsARisk() throws {
        let withoutDHCP = try ruleset(Self.base.replacingOccurrences(of: "  - from: dhcp\n", with: ""))
        let flows = [flow(.outbound, 17, "255.255.255.255", 67)]
        #expect(Review(ruleset: withoutDHCP, flows: flows).risks.map(\.kind) == [.dhcp])
        #expect(Review(ruleset: try ruleset(Self.base), flows: flows).risks.isEmpty)
        var context = Review.Context()
        context.dhcpClientRunning = true
        #expect(Review(ruleset: withoutDHCP, flows: [], context: context).risks.map(\.kind) == [.dhcp])
    }

    @Test func configuredResolversMustBeAllowed() throws {
        var context = Review.Context()
        context.resolvers = Review.resolvers(resolvConf: "search example.org\nnameserver 192.0.2.53\nnameserver 198.51.100.53\nnameserver 127.0.0.53\n")
        #expect(context.resolvers == [IPAddress("192.0.2.53")!, IPAddress("198.51.100.53")!])
        let review = Review(ruleset: try ruleset(Self.base), flows: [], context: context)
        #expect(review.risks.map(\.kind) == [.dns])
        #expect(review.risks.first?.message.contains("198.51.100.53") == true)
        #expect(review.risks.first?.message.contains("192.0.2.53") == false)
    }

    @Test func resolversOfTheManagementChannelAreNoRisk() throws {
        var context = Review.Context()
        context.resolvers = [IPAddress("192.0.2.53")!, IPAddress("198.51.100.53")!]
        context.managementResolvers = [IPAddress("198.51.100.53")!]
        #expect(Review(ruleset: try ruleset(Self.base), flows: [], context: context).risks.isEmpty)
        context.managementResolvers = [IPAddress("203.0.113.53")!]
        #expect(Review(ruleset: try ruleset(Self.base), flows: [], context: context).risks.map(\.kind) == [.dns])
    }

    @Test("the agent's resolvers (--resolver) stand for the host's; /etc/resolv.conf only when no agent's channel names any")
    func theAgentsResolversStandForResolvConf() throws {
        let resolvConf = "nameserver 198.51.100.53\n"
        let agent = ManagementChannel(resolvers: [IPAddress("192.0.2.53")!])
        #expect(HostFacts.resolvers(channel: agent, resolvConf: resolvConf) == [IPAddress("192.0.2.53")!])
        #expect(HostFacts.resolvers(channel: nil, resolvConf: resolvConf) == [IPAddress("198.51.100.53")!])
        #expect(HostFacts.resolvers(channel: ManagementChannel(), resolvConf: resolvConf) == [IPAddress("198.51.100.53")!])
        #expect(HostFacts.resolvers(channel: nil, resolvConf: nil).isEmpty)
        // Reviewed as `review` does: the agent given --resolver 192.0.2.53 is no risk, whatever
        // resolv.conf names; without an agent's channel, resolv.conf's nameserver is.
        var context = Review.Context()
        context.resolvers = HostFacts.resolvers(channel: agent, resolvConf: resolvConf)
        context.managementResolvers = agent.resolvers
        #expect(Review(ruleset: try ruleset(Self.base), flows: [], context: context).risks.isEmpty)
        context = Review.Context()
        context.resolvers = HostFacts.resolvers(channel: nil, resolvConf: resolvConf)
        #expect(Review(ruleset: try ruleset(Self.base), flows: [], context: context).risks.map(\.kind) == [.dns])
    }

    @Test func metadataUsedButNotAllowedIsARisk() throws {
        let review = Review(ruleset: try ruleset(Self.base), flows: [flow(.outbound, 6, "169.254.169.254", 80)])
        #expect(review.risks.map(\.kind) == [.metadata])
    }

    @Test func aCleanRulesetHasNoRisk() throws {
        let flows = [flow(.inbound, 6, "198.51.100.7", 22), flow(.outbound, 17, "192.0.2.53", 53), flow(.outbound, 17, "255.255.255.255", 67)]
        var context = Review.Context()
        context.resolvers = [IPAddress("192.0.2.53")!]
        context.dhcpClientRunning = true
        #expect(Review(ruleset: try ruleset(Self.base), flows: flows, context: context).risks.isEmpty)
    }

    @Test func sshConnectionParsing() {
        #expect(Review.sshSession(environment: nil) == nil)
        #expect(Review.sshSession(environment: "garbage") == nil)
        let session = Review.sshSession(environment: "2001:db8::5 40000 2001:db8::10 22")
        #expect(session?.port == 22)
        #expect(session?.remote == IPAddress("2001:db8::5"))
    }
}
