import CordonCore
import CordonLab
import CordonNftables
import Foundation
import Testing

/// The nftables backend against the real kernel, in a namespace of its own.
@Suite struct NftablesBackendTests {
    static let ruleset = """
        name: backend-test
        networks:
          - name: ssh
            entries: [198.51.100.0/28, "2001:db8:ad::/48", 198.51.100.7]
            services: [tcp/22]
          - name: web
            entries: [0.0.0.0/0, "::/0"]
            services: [tcp/443, tcp/1024-2048, udp/443]
          - name: dns
            entries: [192.0.2.53, 192.0.2.54, 192.0.2.55]
            services: [udp/53, tcp/53]
          - name: icmp
            entries: [0.0.0.0/0, "::/0"]
            services: [icmp/8/0, icmp/0, icmp/3/4, icmpv6/128, icmpv6/1]
        incoming:
          - from: ssh
          - from: icmp
        outgoing:
          - to: web
          - to: dns
          - to: icmp
        """

    static func table(openAfter: Int64? = nil, fallback: Bool = false) throws -> FirewallTable {
        let management = ManagementChannel(
            collectors: [try ManagementChannel.collector("203.0.113.5:9000")],
            resolvers: [IPAddress("192.0.2.53")!],
            extra: [try ManagementChannel.extra("tcp/[2001:db8::99]:8443"), try ManagementChannel.extra("icmp/203.0.113.0/24")])
        let parsed = try RulesetParser.parse(ruleset, file: "backend-test.yaml")
        var previous = parsed
        previous.outgoing.removeAll { $0.network == "web" }
        return CordonTables.enforcement(ruleset: parsed, management: management, openAfter: openAfter, fallback: fallback ? previous : nil)
    }

    @Test("what the backend commits over netlink is exactly what `nft -f` of the rendering loads",
          arguments: [(nil, false), (125, false), (125, true)] as [(Int64?, Bool)])
    func committedEqualsRendering(openAfter: Int64?, fallback: Bool) throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host")
        let table = try Self.table(openAfter: openAfter, fallback: fallback)

        try lab.inNamespace(host) { try NftablesBackend().replace(table) }
        let viaNetlink = try lab.run(host, ["nft", "list", "table", "inet", CordonTables.baseName])
        #expect(viaNetlink.succeeded, "\(viaNetlink.stderr)")

        try lab.inNamespace(host) { try NftablesBackend().remove(table: CordonTables.baseName) }
        #expect(try lab.nftTables(host).isEmpty)
        let loaded = try lab.run(host, ["nft", "-f", "-"], input: table.nftText)
        #expect(loaded.succeeded, "nft -f refused the rendering: \(loaded.stderr)\n\(table.nftText)")
        let viaNft = try lab.run(host, ["nft", "list", "table", "inet", CordonTables.baseName])

        // Expiring elements show the time left, which moves between the two listings; a hash
        // set lists its elements in hash order, which differs between two incarnations.
        func steady(_ text: String) -> String {
            var result = text.replacingOccurrences(of: #" expires [0-9hms]+"#, with: "", options: .regularExpression)
            while let open = result.range(of: "elements = {"), let close = result[open.upperBound...].firstIndex(of: "}") {
                let items = result[open.upperBound..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
                result.replaceSubrange(open.lowerBound...close, with: "ELEMENTS[" + items.sorted().joined(separator: ", ") + "]")
            }
            return result
        }
        #expect(steady(viaNetlink.stdout) == steady(viaNft.stdout))
        if fallback {
            #expect(viaNetlink.stdout.contains("meta nfproto != @armed jump prev_input"), "\(viaNetlink.stdout)")
            #expect(viaNetlink.stdout.contains("chain prev_output {"))
        } else if openAfter != nil {
            #expect(viaNetlink.stdout.contains("meta nfproto != @armed accept"), "\(viaNetlink.stdout)")
            #expect(viaNetlink.stdout.contains("ipv4 timeout 2m5s"), "\(viaNetlink.stdout)")
        }
        // Not two empty listings agreeing: the sets and the default-reject tail are there.
        #expect(viaNetlink.stdout.contains("set allow_out_v4_p32"))
        #expect(viaNetlink.stdout.contains("set allow_out_v4 {"), "tcp/1024-2048 stays an interval set")
        #expect(viaNetlink.stdout.contains("policy drop"))
        #expect(viaNetlink.stdout.contains("reject with tcp reset"))
    }

    @Test("a large set goes over many element messages of one transaction and arrives whole")
    func largeSetsAreSplit() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host")
        // 20,000 /30s four addresses apart never touch, so none merge: 20,000 elements, about
        // twenty messages at the attribute limit.
        let entries = (0..<20_000).map { i -> IPPrefix in IPPrefix(IPAddress(ipv4: 0x0A00_0000 + UInt32(i) * 8), length: 30) }
        let ruleset = Ruleset(networks: [ExternalNetwork(name: "many", entries: entries, services: [.ports(transport: IPProtocolNumber.tcp, range: 443...443)])],
                              outgoing: [Rule(network: "many")])
        let table = CordonTables.enforcement(ruleset: ruleset, management: ManagementChannel())
        let set = try #require(table.set(named: "allow_out_v4_p30"))
        #expect(set.elements.count == 20_000)
        #expect(set.elements.count > 10 * NftablesBackend.elementsPerMessage(set))
        try lab.inNamespace(host) { try NftablesBackend().replace(table) }
        let listed = try lab.run(host, ["nft", "-j", "list", "set", "inet", CordonTables.baseName, "allow_out_v4_p30"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])
        let items = try #require(object["nftables"] as? [[String: Any]])
        let elements = items.compactMap { ($0["set"] as? [String: Any])?["elem"] as? [Any] }.first ?? []
        #expect(elements.count == 20_000)
    }

    @Test("a batch the kernel refuses names the refused message and leaves the previous table exactly as it was")
    func refusedBatchChangesNothing() throws {
        guard Integration.shouldRun else { Issue.record(Integration.skipNote); return }
        let lab = try Lab()
        defer { lab.cleanup() }
        let host = try lab.namespace("host")
        let good = try Self.table()
        try lab.inNamespace(host) { try NftablesBackend().replace(good) }
        let before = try lab.run(host, ["nft", "list", "ruleset"]).stdout

        // A rule that looks up a set the table does not have: the kernel refuses that message,
        // after the table was deleted and re-created earlier in the same transaction.
        var bad = CordonTables.enforcement(ruleset: Ruleset(networks: []), management: ManagementChannel())
        bad.chains[0].rules.append(FirewallRule(matches: [.family(.ipv4), .inSet(name: "missing", key: .init(peer: .incoming, fields: [.ipv4Address]))],
                                                verdict: .accept))
        let refused = bad
        let error = #expect(throws: NftablesError.self) { try lab.inNamespace(host) { try NftablesBackend().replace(refused) } }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("add rule inet cordon input"), "\(text)")
        #expect(text.contains("@missing"), "\(text)")
        #expect(try lab.run(host, ["nft", "list", "ruleset"]).stdout == before)
    }
}
