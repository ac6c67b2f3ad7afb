import CordonCore
import Testing

/// Names in ruleset entries: parsing, writing back, review against the record, proposals.
@Suite struct NameRulesetTests {
    static let text = """
        networks:
          - name: snap-store
            entries: [api.snapcraft.io, "*.s3.amazonaws.com", "**.cdn.example.net", 192.0.2.80]
            services: [tcp/443]
        outgoing:
          - to: snap-store
        """
    let host = IPAddress("192.0.2.10")!

    func error(_ entries: String) throws -> RulesetError {
        let text = "networks:\n  - name: n\n    entries: [\(entries)]\n    services: [tcp/443]\noutgoing:\n  - to: n\n"
        return try #require(throws: RulesetError.self) { try RulesetParser.parse(text, file: "names.yaml") }
    }

    func flow(_ remote: String, _ port: UInt16 = 443) -> (key: FlowKey, stats: FlowStats) {
        (FlowKey(direction: .outbound, transport: 6, local: host, remote: IPPrefix(remote)!, service: port),
         FlowStats(connections: 1, firstSeen: 1000, lastSeen: 2000))
    }

    @Test("entries hold names, one-label and any-depth wildcards next to addresses")
    func parses() throws {
        let network = try #require(try RulesetParser.parse(Self.text, file: "r.yaml").network(named: "snap-store"))
        #expect(network.entries == [IPPrefix("192.0.2.80")!])
        #expect(network.names == [.exact("api.snapcraft.io"), .oneLabel(under: "s3.amazonaws.com"), .anyDepth(under: "cdn.example.net")])
        let names = try RulesetParser.parse("networks:\n  - name: n\n    entries: [Api.Example.COM.]\n    services: [tcp/443]\n", file: "r.yaml")
        #expect(names.networks[0].names == [.exact("api.example.com")], "lower case, final dot dropped")
    }

    @Test("a bad name is refused with the file, line, field and why")
    func errors() throws {
        let wildTLD = try error("\"*.com\"")
        #expect(wildTLD.file == "names.yaml" && wildTLD.line == 3 && wildTLD.field == "networks[0].entries[0]", "\(wildTLD)")
        #expect(wildTLD.message.contains("at least two labels"))
        #expect(try error("192.0.2.1, bad_label-.example.com").field == "networks[0].entries[1]")
        #expect(try error("a.*.example.com").message.contains("whole first label"))
        #expect(try error("localhost").message.contains("fully qualified"))
        #expect(try error("192.0.2.300").message.contains("not an IPv4 or IPv6 address"), "digits only: an address error, not a name one")
    }

    @Test("names write back quoted where YAML needs it and parse to the same network")
    func roundTrip() throws {
        let ruleset = try RulesetParser.parse(Self.text, file: "r.yaml")
        let written = RulesetText.render(ruleset)
        #expect(written.contains("\"*.s3.amazonaws.com\""))
        #expect(try RulesetParser.parse(written, file: "again.yaml") == ruleset)
    }

    @Test("review: a flow is allowed by a name entry when one of its names matches, as each wildcard says")
    func review() throws {
        let ruleset = try RulesetParser.parse(Self.text, file: "r.yaml")
        let flows = [flow("203.0.113.1"), flow("203.0.113.2"), flow("203.0.113.3"), flow("203.0.113.4"), flow("203.0.113.5"),
                     flow("203.0.113.6"), flow("192.0.2.80"), flow("203.0.113.1", 80)]
        let names: [FlowKey: [String]] = [
            flows[0].key: ["api.snapcraft.io"],
            flows[1].key: ["bucket.s3.amazonaws.com"],
            flows[2].key: ["a.b.s3.amazonaws.com"],            // two labels: not *.
            flows[3].key: ["s3.amazonaws.com"],                 // the bare domain: neither wildcard
            flows[4].key: ["x.y.cdn.example.net"],              // any depth
            flows[5].key: ["elsewhere.example", "edge.cdn.example.net"], // a CNAME target matches too
            flows[7].key: ["api.snapcraft.io"],                 // the right name on the wrong port
        ]
        let review = Review(ruleset: ruleset, flows: flows, names: names)
        let allowed = Set(review.allowed.map(\.key.remote.description))
        #expect(review.allowed.count == 5)
        #expect(allowed == ["203.0.113.1", "203.0.113.2", "203.0.113.5", "203.0.113.6", "192.0.2.80"])
        #expect(Set(review.rejected.map(\.key)) == [flows[2].key, flows[3].key, flows[7].key])
        #expect(review.record(flows[0].key, flows[0].stats).remoteNames == ["api.snapcraft.io"])
        #expect(Review(ruleset: ruleset, flows: flows).allowed.count == 1, "without names only the address entry allows")
    }

    @Test("propose: named leftovers become a candidate by name, siblings under one domain a wildcard; unnamed remotes stay addresses")
    func propose() throws {
        let flows = (1...5).map { flow("203.0.113.\($0)") } + [flow("198.51.100.9")]
        var names: [FlowKey: [String]] = [flows[0].key: ["api.snapcraft.io"]]
        for (index, bucket) in ["logs", "backups", "assets"].enumerated() { names[flows[index + 1].key] = ["\(bucket).s3.amazonaws.com"] }
        names[flows[4].key] = ["two.example.org"]
        let candidate = try #require(Proposer.Candidate.grouping(flows, names: names).first)
        #expect(candidate.names.count == 5)
        #expect(candidate.unnamed == [IPPrefix("198.51.100.9")!])
        #expect(candidate.namePatterns == [.oneLabel(under: "s3.amazonaws.com"), .exact("api.snapcraft.io"), .exact("two.example.org")])
        let network = ProposalText.network(for: candidate, names: ServiceNames())
        #expect(network.names == candidate.namePatterns && network.entries == [IPPrefix("198.51.100.9")!])
        // The whole proposal still parses, and the candidate uncommented allows exactly those flows.
        let proposal = Proposer(standard: Ruleset(networks: [])).propose(flows, names: names)
        let text = ProposalText.render(proposal, names: ServiceNames(), flowCount: flows.count, firstSeen: 1000, lastSeen: 2000)
        #expect(text.contains("\"*.s3.amazonaws.com\"") && text.contains("by name: api.snapcraft.io"), "\(text)")
        _ = try RulesetParser.parse(text, file: "proposal.yaml")
        var ruleset = Ruleset(networks: [])
        Leftovers.allow(candidate, narrowed: true, in: &ruleset, names: ServiceNames())
        #expect(Review(ruleset: ruleset, flows: flows, names: names).rejected.isEmpty)
        #expect(Review(ruleset: ruleset, flows: [flow("203.0.113.77")], names: [flow("203.0.113.77").key: ["new.s3.amazonaws.com"]]).rejected.isEmpty,
                "the next bucket is allowed by the wildcard")
        #expect(Proposer.Candidate.grouping([flow("203.0.113.1")]).first?.namePatterns.isEmpty == true)
    }

    @Test("two siblings are names, not a wildcard; a wildcard over a top-level domain is never proposed")
    func wildcardThreshold() throws {
        let flows = (1...4).map { flow("203.0.113.\($0)") }
        let names: [FlowKey: [String]] = [flows[0].key: ["a.example.com"], flows[1].key: ["b.example.com"],
                                          flows[2].key: ["x.com"], flows[3].key: ["y.com"]]
        var more = names
        more[flow("203.0.113.9").key] = ["z.com"]
        let patterns = try #require(Proposer.Candidate.grouping(flows + [flow("203.0.113.9")], names: more).first).namePatterns
        #expect(patterns == [.exact("a.example.com"), .exact("b.example.com"), .exact("x.com"), .exact("y.com"), .exact("z.com")])
    }
}
