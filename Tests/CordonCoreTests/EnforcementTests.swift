import CordonCore
import Foundation
import Testing

@Suite struct FirewallSetTests {
    typealias Box = FirewallSet.Box
    static func box(_ prefix: String, _ services: ClosedRange<UInt16>, _ transport: UInt8 = IPProtocolNumber.tcp) -> Box {
        Box(addresses: IPPrefix(prefix)!.span, transport: transport, services: services)
    }

    /// Every (address, service) point of a small universe, per protocol: coverage must not change.
    static func covered(_ boxes: [Box]) -> Set<[UInt128]> {
        var points = Set<[UInt128]>()
        for box in boxes {
            for address in box.addresses.low...box.addresses.high {
                for service in box.services { points.insert([address, UInt128(box.transport), UInt128(service)]) }
            }
        }
        return points
    }

    @Test("disjoint keeps exactly the same coverage and leaves no two boxes overlapping")
    func disjointPreservesCoverage() {
        // 10.0.0.0/29 space, ports 1-12: overlapping, nested, touching and separate boxes.
        let boxes = [
            Self.box("10.0.0.0/30", 1...4), Self.box("10.0.0.2/31", 3...8), Self.box("10.0.0.4/30", 4...4),
            Self.box("10.0.0.0/29", 10...12), Self.box("10.0.0.1", 11...11), Self.box("10.0.0.6/31", 5...6),
            Self.box("10.0.0.0/30", 1...2, IPProtocolNumber.udp), Self.box("10.0.0.3", 2...3, IPProtocolNumber.udp),
        ]
        let result = FirewallSet.disjoint(boxes)
        #expect(Self.covered(result) == Self.covered(boxes))
        for (i, a) in result.enumerated() {
            for b in result[(i + 1)...] where a.transport == b.transport {
                let addressesOverlap = a.addresses.low <= b.addresses.high && b.addresses.low <= a.addresses.high
                #expect(!(addressesOverlap && a.services.overlaps(b.services)), "\(a) overlaps \(b)")
            }
        }
        #expect(FirewallSet.disjoint(boxes) == result, "deterministic")
    }

    @Test("touching address ranges merge; a duplicate vanishes")
    func merges() {
        let result = FirewallSet.disjoint([Self.box("10.0.0.0/25", 22...22), Self.box("10.0.0.128/25", 22...22), Self.box("10.0.0.5", 22...22)])
        #expect(result == [Self.box("10.0.0.0/24", 22...22)])
    }

    @Test("element text is what nft prints: prefixes, ranges, protocol names")
    func elementText() {
        let set = FirewallSet(name: "s", fields: [.ipv4Address, .transport, .port], elements: FirewallSet.portElements([
            Self.box("0.0.0.0/0", 443...443), Box(addresses: .init(IPAddress("10.0.0.1")!.value, IPAddress("10.0.0.5")!.value),
                                                    transport: IPProtocolNumber.udp, services: 1000...2000),
        ]))
        #expect(set.elements.map(set.elementText) == ["0.0.0.0/0 . tcp . 443", "10.0.0.1-10.0.0.5 . udp . 1000-2000"])
        let v6 = FirewallSet(name: "s", fields: [.ipv6Address, .transport, .port],
                             elements: FirewallSet.portElements([Self.box("::/0", 22...22), Self.box("2001:db8::/32", 53...53, IPProtocolNumber.udp)]))
        #expect(v6.elements.map(v6.elementText) == ["::/0 . tcp . 22", "2001:db8::/32 . udp . 53"])
    }

    @Test("key bytes: network order, every field padded to 4 bytes")
    func keyBytes() {
        let set = FirewallSet(name: "s", fields: [.ipv4Address, .transport, .port],
                              elements: FirewallSet.portElements([Self.box("192.0.2.0/24", 22...23)]))
        #expect(set.keyLength == 12)
        #expect(set.keyBytes(set.elements[0], high: false) == [192, 0, 2, 0, 6, 0, 0, 0, 0, 22, 0, 0])
        #expect(set.keyBytes(set.elements[0], high: true) == [192, 0, 2, 255, 6, 0, 0, 0, 0, 23, 0, 0])
        // nft's concatenated type: ipv4_addr (7), inet_proto (12), inet_service (13), 6 bits each.
        #expect(set.keyTypeID == (7 << 12 | 12 << 6 | 13))
    }

    @Test("an interval becomes the fewest covering prefixes")
    func prefixes() {
        func text(_ low: String, _ high: String) -> [String] {
            let family: AddressFamily = low.contains(":") ? .ipv6 : .ipv4
            return FirewallSet.prefixes(.init(IPAddress(low)!.value, IPAddress(high)!.value), width: family.bitWidth)
                .map { "\(IPAddress(value: $0.address, family: family))/\($0.length)" }
        }
        #expect(text("10.0.0.1", "10.0.0.6") == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"])
        #expect(text("0.0.0.0", "255.255.255.255") == ["0.0.0.0/0"])
        #expect(text("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == ["::/0"])
        #expect(text("198.51.100.0", "198.51.101.255") == ["198.51.100.0/23"])
    }

    @Test("exact prefixes with a few ports go to hash sets by length; wide port ranges and anywhere stay intervals")
    func exactSplit() {
        let (exact, rest) = FirewallSet.exactElements([
            Self.box("198.51.100.0/24", 22...22), Self.box("192.0.2.7", 67...68, IPProtocolNumber.udp),
            Self.box("192.0.2.8", 1024...65535), Self.box("0.0.0.0/0", 443...443),
        ], family: .ipv4)
        #expect(exact[24]?.count == 1)
        #expect(exact[32]?.count == 2, "udp/67 and udp/68 spelled out")
        #expect(rest.map(\.services) == [443...443, 1024...65535])
    }

    @Test("ICMP services become type x code rectangles with the same coverage")
    func icmpRectangles() {
        let any = IPPrefix("0.0.0.0/0")!.span
        func elements(_ services: ClosedRange<UInt16>) -> [[FirewallSet.Span]] {
            FirewallSet.icmpElements([Box(addresses: any, transport: IPProtocolNumber.icmp, services: services)]).map { Array($0.spans.dropFirst()) }
        }
        #expect(elements(0x0800...0x0800) == [[.init(8), .init(0)]])
        #expect(elements(0x0300...0x03FF) == [[.init(3), .init(0, 255)]])
        #expect(elements(0...0xFFFF) == [[.init(0, 255), .init(0, 255)]])
        // From type 3 code 4 to type 5 code 1: a partial type, a whole one, a partial one.
        #expect(elements(0x0304...0x0501) == [[.init(3), .init(4, 255)], [.init(4), .init(0, 255)], [.init(5), .init(0, 1)]])
    }
}

@Suite struct EnforcementTableTests {
    static let ruleset = try! RulesetParser.parse("""
        networks:
          - name: ssh
            entries: [198.51.100.0/28]
            services: [tcp/22]
          - name: dns
            entries: [192.0.2.53, "2001:db8::53"]
            services: [udp/53, tcp/53]
          - name: ping
            entries: [0.0.0.0/0, "::/0"]
            services: [icmp/8, icmpv6/128]
        incoming:
          - from: ssh
          - from: ping
        outgoing:
          - to: dns
        """, file: "t.yaml")

    /// `count` /24 networks 512 addresses apart, so that none merge.
    static func spaced(_ count: Int) -> [String] {
        (0..<count).map { IPPrefix(IPAddress(ipv4: 0x0A00_0000 + UInt32($0) * 512), length: 24).description }
    }

    @Test("a network of many entries and many services is its addresses plus its services, not their product")
    func wideNetworksStayLinear() throws {
        let ports = (0..<64).map { "tcp/\(1000 + 7 * $0)" }
        let text = "networks:\n  - name: wide\n    entries: [\(Self.spaced(5000).joined(separator: ", "))]\n    services: [\(ports.joined(separator: ", "))]\n"
            + "  - name: dns\n    entries: [192.0.2.53]\n    services: [udp/53, tcp/53]\noutgoing:\n  - to: wide\n  - to: dns\n"
        let ruleset = try RulesetParser.parse(text, file: "wide.yaml")
        let table = CordonTables.enforcement(ruleset: ruleset, management: ManagementChannel(), logGroup: 42)
        let elements = table.sets.filter { $0.name.hasPrefix("allow_") }.reduce(0) { $0 + $1.elements.count }
        #expect(elements == 5000 + 64 + 2, "addresses + services + the small network's product")
        let addresses = try #require(table.set(named: "allow_out_v4_w1_p24"))
        let services = try #require(table.set(named: "allow_out_v4_w1_svc"))
        #expect(addresses.fields == [.ipv4Address] && addresses.exact && services.fields == [.transport, .port])
        let output = try #require(table.chains.first { $0.hook == .output })
        #expect(output.rules.map(\.nftText).contains(
            "meta nfproto ipv4 ip daddr & 255.255.255.0 @allow_out_v4_w1_p24 meta l4proto . th dport @allow_out_v4_w1_svc accept"))
        // Below the limit, the product in the shared sets as before.
        let small = try RulesetParser.parse(text.replacingOccurrences(of: Self.spaced(5000).joined(separator: ", "),
                                                                      with: Self.spaced(10).joined(separator: ", ")), file: "small.yaml")
        #expect(CordonTables.enforcement(ruleset: small, management: ManagementChannel()).set(named: "allow_out_v4_w1_svc") == nil)
    }

    @Test("default-reject: fixed rules first, the sets, and a logged drop (in) or reject (out) last")
    func layout() throws {
        let table = CordonTables.enforcement(ruleset: Self.ruleset, management: ManagementChannel(), logGroup: 42)
        let input = try #require(table.chains.first { $0.hook == .input })
        let output = try #require(table.chains.first { $0.hook == .output })
        #expect(input.policy == .drop && output.policy == .drop)
        #expect(input.rules.map(\.nftText) == [
            "iif \"lo\" accept",
            "ct state established,related accept",
            "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 133-136 accept",
            "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 141-143 accept",
            "ct state invalid drop",
            "meta nfproto ipv4 ip saddr & 255.255.255.240 . meta l4proto . th dport @allow_in_v4_p28 accept",
            "meta nfproto ipv4 meta l4proto icmp ip saddr . icmp type . icmp code @allow_in_icmp_v4 accept",
            "meta nfproto ipv6 meta l4proto ipv6-icmp ip6 saddr . icmpv6 type . icmpv6 code @allow_in_icmp_v6 accept",
            "counter log prefix \"cordon-in\" group 42 drop",
        ])
        #expect(output.rules.suffix(3).map(\.nftText) == [
            "counter log prefix \"cordon-out\" group 42",
            "meta l4proto tcp reject with tcp reset",
            "reject with icmpx admin-prohibited",
        ])
        let dns6 = try #require(table.set(named: "allow_out_v6_p128"))
        #expect(dns6.exact)
        #expect(dns6.elements.map(dns6.elementText) == ["2001:db8::53 . tcp . 53", "2001:db8::53 . udp . 53"])
        let ping4 = try #require(table.set(named: "allow_in_icmp_v4"))
        #expect(ping4.elements.map(ping4.elementText) == ["0.0.0.0/0 . 8 . 0-255"])
    }

    @Test("while unconfirmed, each chain starts with the kernel's confirmation switch; confirmed, it is gone")
    func confirmationSwitch() throws {
        let armed = CordonTables.enforcement(ruleset: Self.ruleset, management: ManagementChannel(), openAfter: 125)
        let set = try #require(armed.set(named: CordonTables.armedSetName))
        #expect(set.elements.map(set.elementText) == ["ipv4 timeout 125s", "ipv6 timeout 125s"])
        #expect(set.keyLength == 1)
        for chain in armed.chains where chain.hook != .forward {
            #expect(chain.rules.first?.nftText == "meta nfproto != @armed accept")
        }
        let confirmed = CordonTables.enforcement(ruleset: Self.ruleset, management: ManagementChannel())
        #expect(confirmed.set(named: CordonTables.armedSetName) == nil)
        #expect(!confirmed.nftText.contains("@armed"))
        #expect(Array(armed.chains[0].rules.dropFirst()) == confirmed.chains[0].rules, "otherwise the same rules")
    }

    @Test("trying a new version, the switch falls back to the last confirmed one, kept whole in prev_ chains")
    func confirmationSwitchFallsBackToTheConfirmedVersion() throws {
        let previous = try RulesetParser.parse("""
            networks:
              - name: web
                entries: [203.0.113.0/24]
                services: [tcp/443]
            outgoing:
              - to: web
            """, file: "v1.yaml")
        let table = CordonTables.enforcement(ruleset: Self.ruleset, management: ManagementChannel(), openAfter: 10, fallback: previous)
        let confirmedV1 = CordonTables.enforcement(ruleset: previous, management: ManagementChannel())
        #expect(table.chains.map(\.name) == ["prev_input", "prev_output", "input", "forward", "output"])
        #expect(table.chains.first { $0.name == "input" }?.rules.first?.nftText == "meta nfproto != @armed jump prev_input")
        #expect(table.chains.first { $0.name == "output" }?.rules.first?.nftText == "meta nfproto != @armed jump prev_output")
        // prev_output is version 1's output chain, its sets renamed.
        let prevOutput = try #require(table.chains.first { $0.name == "prev_output" })
        #expect(prevOutput.hook == nil)
        #expect(prevOutput.rules.map(\.nftText) == confirmedV1.chains[2].rules.map { $0.nftText.replacingOccurrences(of: "@allow_", with: "@prev_allow_") })
        #expect(table.set(named: "prev_allow_out_v4")?.elements == confirmedV1.set(named: "allow_out_v4")?.elements)
        #expect(prevOutput.rules.last?.verdict == .reject(.adminProhibited), "the fallback decides every packet itself")
    }

    @Test("the management channel gets its own sets, before the ruleset's")
    func management() throws {
        let management = ManagementChannel(collectors: [try ManagementChannel.collector("203.0.113.5:9000")],
                                           resolvers: [IPAddress("192.0.2.53")!],
                                           extra: [try ManagementChannel.extra("tcp/198.51.100.0/24:8443")])
        let table = CordonTables.enforcement(ruleset: Ruleset(networks: []), management: management)
        let hosts = try #require(table.set(named: "mgmt_out_v4_p32"))
        #expect(hosts.elements.map(hosts.elementText) == ["192.0.2.53 . tcp . 53", "192.0.2.53 . udp . 53", "203.0.113.5 . tcp . 9000"])
        let network = try #require(table.set(named: "mgmt_out_v4_p24"))
        #expect(network.elements.map(network.elementText) == ["198.51.100.0 . tcp . 8443"])
        let incoming = try #require(table.set(named: "mgmt_in_v4_p24"))
        #expect(incoming.elements.map(incoming.elementText) == ["198.51.100.0 . tcp . 8443"])
        let output = try #require(table.chains.first { $0.hook == .output })
        #expect(output.rules.map(\.nftText).contains("meta nfproto ipv4 ip daddr & 255.255.255.0 . meta l4proto . th dport @mgmt_out_v4_p24 accept"))
        #expect(table.sets.allSatisfy { $0.name.hasPrefix("mgmt_") })
    }

    @Test("a ruleset's size changes set elements, never the number of rules")
    func rulesDoNotGrow() throws {
        func table(_ count: Int) throws -> FirewallTable {
            let entries = (0..<count).map { "10.\($0 / 256).\($0 % 256).0/25" }.joined(separator: ", ")
            let ruleset = try RulesetParser.parse("""
                networks:
                  - name: partners
                    entries: [\(entries)]
                    services: [tcp/443]
                outgoing:
                  - to: partners
                """, file: "t.yaml")
            return CordonTables.enforcement(ruleset: ruleset, management: ManagementChannel())
        }
        let small = try table(10), large = try table(5000)
        #expect(small.chains.map(\.rules.count) == large.chains.map(\.rules.count))
        #expect(large.set(named: "allow_out_v4_p25")?.elements.count == 5000)
    }
}

@Suite struct ManagementChannelTests {
    @Test("options parse; bad values name the option and say what is expected")
    func parsing() throws {
        #expect(try ManagementChannel.collector("192.0.2.20:9000").hostPort == "192.0.2.20:9000")
        #expect(try ManagementChannel.collector("[2001:db8::20]:9000").hostPort == "[2001:db8::20]:9000")
        #expect(try ManagementChannel.extra("udp/[2001:db8::/64]:53").description == "udp/[2001:db8::/64]:53")
        #expect(try ManagementChannel.extra("tcp/2001:db8::/64").port == nil)
        #expect(try ManagementChannel.extra("icmp/198.51.100.0/24").description == "icmp/198.51.100.0/24")
        #expect(throws: ManagementChannel.ParseError(option: "--collector", value: "collector.example:9000",
                                                     message: "'collector.example' is not an IP address (host names are not accepted: give the address)")) {
            try ManagementChannel.collector("collector.example:9000")
        }
        #expect(throws: ManagementChannel.ParseError.self) { try ManagementChannel.collector("192.0.2.20") }
        #expect(throws: ManagementChannel.ParseError.self) { try ManagementChannel.extra("icmp/192.0.2.1:80") }
        #expect(throws: ManagementChannel.ParseError.self) { try ManagementChannel.extra("icmpv6/192.0.2.1") }
        #expect(throws: ManagementChannel.ParseError.self) { try ManagementChannel.extra("gre/192.0.2.1") }
        #expect(throws: ManagementChannel.ParseError.self) { try ManagementChannel.resolver("dns.example") }
    }

    @Test("stored as the option texts and read back equal")
    func codable() throws {
        let channel = ManagementChannel(collectors: [try ManagementChannel.collector("[2001:db8::20]:9000")],
                                        resolvers: [IPAddress("192.0.2.53")!], extra: [try ManagementChannel.extra("tcp/192.0.2.0/24")])
        let data = try JSONEncoder().encode(channel)
        #expect(String(decoding: data, as: UTF8.self).contains("[2001:db8::20]:9000"))
        #expect(try JSONDecoder().decode(ManagementChannel.self, from: data) == channel)
    }
}
