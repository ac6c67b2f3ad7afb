import CordonCore
import Testing

@Suite struct PolicyComposerTests {
    static func ruleset(_ text: String) throws -> Ruleset { try RulesetParser.parse(text, file: "t.yaml") }

    static let web = """
        name: web
        networks:
          - name: dns
            entries: [192.0.2.53]
            services: [udp/53, tcp/53]
          - name: ssh
            entries: [198.51.100.0/28]
            services: [tcp/22]
          - name: unused
            entries: [203.0.113.0/24]
            services: [tcp/9]
        incoming:
          - from: ssh
        outgoing:
          - to: dns
        """
    static let base = """
        name: base
        networks:
          - name: dns
            entries: [192.0.2.53]
            services: [udp/53, tcp/53]
          - name: ssh
            entries: [203.0.113.0/28]
            services: [tcp/22]
        incoming:
          - from: ssh
        outgoing:
          - to: dns
        """

    @Test("the union: a network both define alike is one, one they define differently is kept apart per ruleset; unused networks go")
    func union() throws {
        let parts = [PolicyComposer.Part(ruleset: try Self.ruleset(Self.web), name: "web", version: 2, assignment: "a1"),
                     PolicyComposer.Part(ruleset: try Self.ruleset(Self.base), name: "base", version: 5, assignment: "a2")]
        let (union, sources) = PolicyComposer.compose(parts)
        #expect(union.networks.map(\.name) == ["dns", "base_ssh", "web_ssh"])
        #expect(union.incoming.map(\.network) == ["base_ssh", "web_ssh"])
        #expect(union.outgoing.map(\.network) == ["dns"])
        // Both brought `outgoing to dns`: both are named as its source.
        #expect(sources.filter { $0.rule == "outgoing to dns" }.map(\.ruleset) == ["base", "web"])
        let webSSH = try #require(sources.first { $0.rule == "incoming from web_ssh" })
        #expect(webSSH.ruleset == "web" && webSSH.version == 2 && webSSH.assignment == "a1")
        // What the agent will read: the text parses back to the same union.
        let text = RulesetText.render(union)
        #expect(try RulesetParser.parse(text, file: "effective.yaml") == union)
    }

    @Test("two versions of one ruleset, or a literal name equal to a renamed one, never share a name: each rule keeps its own network")
    func namesNeverCollide() throws {
        let v1 = try Self.ruleset(Self.web)
        let v2 = try Self.ruleset(Self.web.replacingOccurrences(of: "198.51.100.0/28", with: "192.0.2.128/28"))
        let literal = try Self.ruleset("""
            name: web
            networks:
              - name: web_ssh
                entries: [203.0.113.64/28]
                services: [tcp/2222]
            incoming:
              - from: web_ssh
            """)
        let (union, sources) = PolicyComposer.compose([
            PolicyComposer.Part(ruleset: v1, name: "web", version: 1, assignment: "a1"),
            PolicyComposer.Part(ruleset: v2, name: "web", version: 2, assignment: "a2"),
            PolicyComposer.Part(ruleset: literal, name: "web", version: 3, assignment: "a3"),
        ])
        #expect(Set(union.networks.map(\.name)).count == union.networks.count, "one name, one definition: \(union.networks.map(\.name))")
        // Each version's ssh rule reaches its own addresses.
        let entries = Set(union.incoming.compactMap { rule in union.network(named: rule.network)?.entries.first?.description })
        #expect(entries == ["198.51.100.0/28", "192.0.2.128/28", "203.0.113.64/28"], "\(union.incoming.map(\.network))")
        #expect(Set(sources.filter { $0.rule.hasPrefix("incoming") }.map(\.version)) == [1, 2, 3])
        #expect(try RulesetParser.parse(RulesetText.render(union), file: "effective.yaml") == union)
    }

    @Test("the same assignments in another order give the same text, so the same digest")
    func orderIndependent() throws {
        let a = PolicyComposer.Part(ruleset: try Self.ruleset(Self.web), name: "web", version: 2, assignment: "a1")
        let b = PolicyComposer.Part(ruleset: try Self.ruleset(Self.base), name: "base", version: 5, assignment: "a2")
        #expect(RulesetText.render(PolicyComposer.compose([a, b]).ruleset) == RulesetText.render(PolicyComposer.compose([b, a]).ruleset))
        #expect(PolicyComposer.compose([a, b]).sources == PolicyComposer.compose([b, a]).sources)
    }

    @Test("one ruleset alone keeps its own names; no ruleset is an empty policy (reject all but the always-allowed)")
    func edges() throws {
        let only = PolicyComposer.compose([PolicyComposer.Part(ruleset: try Self.ruleset(Self.web), name: "web", version: 1, assignment: "a")])
        #expect(only.ruleset.networks.map(\.name) == ["dns", "ssh"])
        let none = PolicyComposer.compose([])
        #expect(none.ruleset.incoming.isEmpty && none.ruleset.outgoing.isEmpty && none.sources.isEmpty)
    }
}
