@testable import CordonAgent
import CordonCore
import CordonStore
import Foundation
import Testing

/// The pure parts of enforcing names: the table's name sets, the elements an answer adds, the
/// kernel check, collectors by name, the config keys.
@Suite struct NameEnforcementTests {
    static let ruleset = """
        networks:
          - name: store
            entries: [api.snapcraft.io, "*.s3.example", 192.0.2.80]
            services: [tcp/443, tcp/8000-8080, icmp/8]
          - name: unused
            entries: [unused.example]
            services: [tcp/443]
          - name: mail
            entries: [mx.example]
            services: [tcp/25]
        outgoing:
          - to: store
        incoming:
          - from: mail
        """

    func parsed() throws -> Ruleset { try RulesetParser.parse(Self.ruleset, file: "r.yaml") }

    @Test("a network with names gets address sets per family (timed, with the elements known now) and a services set, matched in one rule per direction; unused networks get none")
    func table() throws {
        let ruleset = try parsed()
        let capture = CordonTables.NameCapture(resolvers: [IPAddress("192.0.2.53")!], group: 7101,
                                               elements: ["store": [NameElement(address: IPAddress("203.0.113.10")!, timeout: 170),
                                                                    NameElement(address: IPAddress("2001:db8:cafe::1")!, timeout: 60),
                                                                    NameElement(address: IPAddress("203.0.113.11")!, timeout: 0)]])
        let table = CordonTables.enforcement(ruleset: ruleset, management: ManagementChannel(resolvers: [IPAddress("192.0.2.53")!]), names: capture)
        #expect(CordonTables.nameSetNetworks(ruleset).map(\.network.name) == ["store", "mail"])
        let v4 = try #require(table.set(named: "names_1_v4"))
        #expect(v4.dynamic && v4.hasTimeouts && !v4.isInterval)
        #expect(v4.elements == [.init([.init(IPAddress("203.0.113.10")!.value)], timeout: 170)], "an element with no time left is not installed")
        #expect(table.set(named: "names_1_v6")?.elements.first?.timeout == 60)
        #expect(table.set(named: "names_1_svc")?.elements.count == 2, "tcp 443 and 8000-8080; ICMP is not for names")
        #expect(table.set(named: "names_3_v4") == nil, "the unused network has no sets")
        let text = table.nftText
        #expect(text.contains("ip daddr @names_1_v4 meta l4proto . th dport @names_1_svc accept"), "\(text)")
        #expect(text.contains("ip saddr @names_2_v4 meta l4proto . th dport @names_2_svc accept"), "incoming by name")
        #expect(text.contains("203.0.113.10 timeout 170s"))
        #expect(text.contains("th sport @dns_v4 queue flags bypass to 7101"), "answers held, not copied")
        #expect(!text.contains("cordon-dns"))
        // The address entry still goes the usual way.
        #expect(table.sets.contains { $0.name.hasPrefix("allow_out_v4") })
        // Without names the capture only copies.
        let plain = CordonTables.enforcement(ruleset: Ruleset(networks: []), management: ManagementChannel(), names: capture)
        #expect(plain.nftText.contains("log prefix \"cordon-dns\" group 7101") && !plain.nftText.contains("queue"))
        #expect(CordonTables.isNameSet("names_1_v4") && CordonTables.isNameSet("prev_names_2_v6") && !CordonTables.isNameSet("names_1_svc"))
    }

    @Test("an answer adds its addresses to the sets of every network one of its names matches, for max(TTL, 60 s) + 120 s")
    func elements() throws {
        let networks = CordonTables.nameSetNetworks(try parsed())
        let answers: [(address: IPAddress, names: [String], ttl: UInt32)] = [
            (IPAddress("203.0.113.10")!, ["api.snapcraft.io"], 0),
            (IPAddress("203.0.113.20")!, ["www.shop.test", "bucket.s3.example"], 3600),   // the CNAME target matches
            (IPAddress("2001:db8:cafe::6")!, ["six.s3.example"], 30),
            (IPAddress("203.0.113.30")!, ["a.b.s3.example"], 30),                          // two labels: no
            (IPAddress("203.0.113.10")!, ["api.snapcraft.io"], 300),                       // again, longer: the longer wins
        ]
        let sets = NameHolder.elements(answers, networks: networks, now: 1000)
        #expect(sets.map(\.name) == ["names_1_v4", "names_1_v6"])
        let v4 = sets[0].elements.map { ($0.spans[0].low, $0.timeout) }
        #expect(v4.count == 2)
        #expect(v4.contains { $0.0 == IPAddress("203.0.113.10")!.value && $0.1 == 420 })
        #expect(v4.contains { $0.0 == IPAddress("203.0.113.20")!.value && $0.1 == 3720 })
        #expect(sets[1].elements.first?.timeout == 180, "TTL 30 is raised to the 60 s floor")
        #expect(NameHolder.elements([(IPAddress("198.51.100.1")!, ["mx.example"], 60)], networks: networks, now: 0).map(\.name) == ["names_2_v4"])
        #expect(NameHolder.elements([(IPAddress("198.51.100.1")!, ["other.example"], 60)], networks: networks, now: 0).isEmpty)
    }

    @Test("the name book gives a new table the still-valid addresses of matching names, and what a restart carried over for the same version")
    func bookElements() throws {
        let ruleset = try parsed()
        let book = NameBook(table: NameTable())
        var message: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        message += [3] + Array("api".utf8) + [9] + Array("snapcraft".utf8) + [2] + Array("io".utf8) + [0, 0, 1, 0, 1]
        message += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 10, 0, 4, 203, 0, 113, 10]
        let now = TimeText.now()
        #expect(book.learn([message], at: now).count == 1)
        #expect(book.elements(for: ruleset, version: 1, now: now + 5)["store"] == [NameElement(address: IPAddress("203.0.113.10")!, timeout: 175)])
        #expect(book.elements(for: ruleset, version: 1, now: now + 181).isEmpty, "past TTL floor and grace")
        book.carry(version: 2, sets: ["names_2_v4": [(IPAddress("198.51.100.9")!, now + 50)]])
        #expect(book.elements(for: ruleset, version: 2, now: now)["mail"] == [NameElement(address: IPAddress("198.51.100.9")!, timeout: 50)])
        #expect(book.elements(for: ruleset, version: 3, now: now)["mail"] == nil, "carried only into the version it came from")
    }

    @Test("names are enforced from Linux 6.10 on")
    func kernel() {
        #expect(NameKernel.unsupported(release: "6.18.44-fc-v1045") == nil)
        #expect(NameKernel.unsupported(release: "6.10.0") == nil)
        #expect(NameKernel.unsupported(release: "6.1.0-28-amd64")?.contains("6.10") == true)
        #expect(NameKernel.unsupported(release: "5.15.0") != nil)
        #expect(NameKernel.unsupported(release: "weird") != nil)
    }

    @Test("--collector takes NAME:PORT as well as addresses; a wildcard or bad name is refused naming the option")
    func collectors() throws {
        #expect(try ManagementChannel.collectorTarget("collector.example:9443") == .name(.init(name: "collector.example", port: 9443)))
        #expect(try ManagementChannel.collectorTarget("192.0.2.20:9000")
                == .address(.init(transport: 6, addresses: IPPrefix("192.0.2.20")!, port: 9000)))
        #expect(try ManagementChannel.collectorTarget("[2001:db8::20]:9000")
                == .address(.init(transport: 6, addresses: IPPrefix("2001:db8::20")!, port: 9000)))
        for bad in ["*.example.com:9000", "bad_-.example:1", "collector.example:0", "collector.example", "localhost:9000"] {
            #expect(throws: ManagementChannel.ParseError.self, "\(bad)") { try ManagementChannel.collectorTarget(bad) }
        }
        var config = AgentConfig()
        config.management.collectorNames = [.init(name: "collector.example", port: 9443)]
        let channel = config.effectiveManagement(resolvConf: "/nonexistent", named: [.init(name: "collector.example", port: 9443): [IPAddress("192.0.2.99")!]])
        #expect(channel.collectors == [.init(transport: 6, addresses: IPPrefix("192.0.2.99")!, port: 9443)])
        #expect(channel.summary.contains("collector collector.example:9443 (by name)"))
    }

    @Test("the config file takes collectors by name and the name table's limits")
    func config() throws {
        let file = NSTemporaryDirectory() + "cordon-names-\(UInt32.random(in: 0...UInt32.max)).yaml"
        defer { unlink(file) }
        try "collectors: [\"collector.example:9443\", \"192.0.2.20:9000\"]\naddresses_per_name: 50\nnames_per_address: 4\nnames_max: 1000\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(path: file)
        #expect(config.management.collectorNames == [.init(name: "collector.example", port: 9443)])
        #expect(config.management.collectors.count == 1)
        #expect(config.nameLimits == NameTable.Limits(addressesPerName: 50, namesPerAddress: 4, names: 1000))
        try "names_max: 0\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: file) }
    }
}
