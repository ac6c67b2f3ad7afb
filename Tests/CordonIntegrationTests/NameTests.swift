import CordonCore
import CordonLab
import CordonNftables
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Names on flows, learned from a real resolver (dnsmasq serving a zone of the test's own) by the
/// real agent, with real clients (glibc's resolver through getent and socat).
@Suite(.serialized, .enabled(if: Integration.shouldRun, Integration.skipNote))
struct NameTests {
    typealias S = NameScenario

    /// A response of a server that is not a resolver: `forged.example` at 203.0.113.66.
    static func forgedAnswer(id: UInt16 = 0x4242) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        let name: [UInt8] = [6] + Array("forged".utf8) + [7] + Array("example".utf8) + [0]
        bytes += name + [0, 1, 0, 1]
        bytes += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 203, 0, 113, 66]
        return bytes
    }

    static let zone = (1...200).map { "198.51.100.\($0) big.example" } + ["203.0.113.10 api.snapcraft.io"]
    static let records = [
        "--host-record=shop.cdn.example,203.0.113.20",
        "--cname=www.shop.example,shop.cdn.example",
        "--host-record=six.example,2001:db8:cafe::6",
        "--host-record=zero.example,203.0.113.30,0",
        "--host-record=one.example,203.0.113.31,1",
    ]

    func names(_ lab: Lab, _ cordon: String, _ database: String) throws -> [String: [String]] {
        let result = try lab.run(nil, [cordon, "names", "--json", "--db", database])
        guard result.succeeded else { throw LabError("cordon names failed: \(result.stderr)") }
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        var byName: [String: [String]] = [:]
        for entry in entries {
            let addresses = (entry["addresses"] as? [[String: Any]] ?? []).compactMap { $0["address"] as? String }
            byName[entry["name"] as? String ?? ""] = addresses
        }
        return byName
    }

    @Test("discovery names flows from the resolvers' answers: CNAME chains, AAAA only, TTL 0 and 1, a truncated answer retried over TCP, both resolver families; a forged answer teaches nothing")
    func discoveryLearnsNames() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try NameScenario(lab: lab, zone: Self.zone, records: Self.records)
        // A non-resolver that answers whatever it is asked with a forged record.
        let forged = lab.directory + "/forged.bin"
        try Data(Self.forgedAnswer()).write(to: URL(fileURLWithPath: forged))
        _ = try lab.spawn(scenario.net, ["socat", "UDP4-RECVFROM:53,bind=\(S.forgerV4),fork", "SYSTEM:cat \(forged)"])
        let agent = try scenario.startAgent(binary: cordon, extra: ["--resolver", S.resolverV4, "--resolver", S.resolverV6])
        let table = try lab.run(scenario.host, ["nft", "list", "table", "inet", "cordon"]).stdout
        #expect(table.contains("cordon-dns"), "the capture rule is installed in discovery:\n\(table)")

        #expect(try scenario.connect("api.snapcraft.io"))
        #expect(try scenario.connect("www.shop.example"))
        #expect(try scenario.connect("six.example", family: "TCP6"))
        #expect(try scenario.connect("zero.example"))
        #expect(try scenario.connect("one.example"))
        let big = try scenario.lookup("big.example", family: "ahostsv4")
        #expect(big.count == 200, "glibc retried the truncated answer over TCP and got all 200 addresses, got \(big.count)")
        #expect(try scenario.connect(big[0], port: 80))
        // The same names through the IPv6 resolver.
        try lab.setResolvers(scenario.host, [S.resolverV6])
        #expect(try scenario.lookup("one.example") == ["203.0.113.31"])
        // A query to the forger: answered (the client gets the forged record), never learned.
        let query: [UInt8] = [0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6] + Array("forged".utf8) + [7] + Array("example".utf8) + [0, 0, 1, 0, 1]
        let queryFile = lab.directory + "/query.bin"
        try Data(query).write(to: URL(fileURLWithPath: queryFile))
        let forgedReply = try lab.run(scenario.host, ["socat", "-T1", "-u", "OPEN:\(queryFile)", "UDP4:\(S.forgerV4):53"])
        #expect(forgedReply.succeeded)
        // Once the resolver's answers are read (the forger's never reach the agent: the capture
        // rule takes the resolvers' answers only).
        var statusResult = try lab.run(nil, [cordon, "status", "--json", "--socket", scenario.socket])
        try Integration.waitUntil("the agent read the resolver's answers") {
            statusResult = try lab.run(nil, [cordon, "status", "--json", "--socket", scenario.socket])
            let read = (try? JSONSerialization.jsonObject(with: Data(statusResult.stdout.utf8))) as? [String: Any]
            return ((read?["names"] as? [String: Any])?["responses"] as? Int ?? 0) >= 7
        }
        let status = try #require(try JSONSerialization.jsonObject(with: Data(statusResult.stdout.utf8)) as? [String: Any])
        let counters = try #require(status["names"] as? [String: Any], "status has names: \(statusResult.stdout)")
        #expect(counters["malformed"] as? Int == 0)
        #expect(counters["lost_log_messages"] as? Int == 0)
        #expect(counters["abandoned_streams"] as? Int == 0)
        #expect((counters["responses"] as? Int ?? 0) >= 7)
        #expect(lab.stop(agent) == 0)

        let learned = try names(lab, cordon, scenario.database)
        #expect(learned["api.snapcraft.io"] == ["203.0.113.10"])
        #expect(learned["www.shop.example"] == ["203.0.113.20"])
        #expect(learned["shop.cdn.example"] == ["203.0.113.20"], "the CNAME's target names its address too")
        #expect(learned["six.example"] == ["2001:db8:cafe::6"])
        #expect(learned["zero.example"] == ["203.0.113.30"])
        #expect(learned["big.example"]?.count == 200, "all 200 records from the TCP answer")
        #expect(learned["one.example"] == ["203.0.113.31"])
        #expect(learned["forged.example"] == nil, "a non-resolver's answer is not learned: \(learned.keys.sorted())")

        let flows = try lab.flows(cordon, database: scenario.database, filters: ["--direction", "outbound", "--protocol", "tcp"])
        func remoteNames(_ address: String) -> [String]? {
            flows.first { $0.remote == address }?["remote_names"] as? [String]
        }
        #expect(remoteNames("203.0.113.10") == ["api.snapcraft.io"])
        #expect(remoteNames("203.0.113.20") == ["www.shop.example", "shop.cdn.example"], "the name asked for first, then its CNAME target")
        #expect(remoteNames("2001:db8:cafe::6") == ["six.example"])
        #expect(remoteNames("203.0.113.30") == ["zero.example"], "TTL 0: the connection right after still carries the name")
        #expect(remoteNames("203.0.113.31") == ["one.example"])
        #expect(remoteNames(big[0]) == ["big.example"])
        // The DNS flows themselves carry no names (the resolver was never looked up by name).
        let dns = try lab.flows(cordon, database: scenario.database, filters: ["--port", "53"])
        #expect(!dns.isEmpty && dns.allSatisfy { ($0["remote_names"] as? [String]) == [] })
        let text = try lab.run(nil, [cordon, "flows", "--db", scenario.database, "--port", "443"]).stdout
        #expect(text.contains("NAME") && text.contains("api.snapcraft.io"), "the text table shows the first name:\n\(text)")

        // propose: the leftover https flows become a candidate by the names asked for, not the CNAME target.
        let proposal = try lab.run(nil, [cordon, "propose", "--db", scenario.database])
        #expect(proposal.succeeded, "\(proposal.stderr)")
        let candidate = proposal.stdout.split(separator: "\n").first { $0.contains("entries:") && $0.contains("api.snapcraft.io") }
        #expect(candidate?.contains("www.shop.example") == true && candidate?.contains("shop.cdn.example") == false,
                "the https candidate by name:\n\(proposal.stdout)")
        // review: a ruleset by name allows the recorded flows its names match, and nothing else on 443.
        let ruleset = lab.directory + "/by-name.yaml"
        try "networks:\n  - name: store\n    entries: [api.snapcraft.io, \"*.shop.example\"]\n    services: [tcp/443]\noutgoing:\n  - to: store\n"
            .write(toFile: ruleset, atomically: true, encoding: .utf8)
        let review = try lab.run(nil, [cordon, "review", ruleset, "--json", "--db", scenario.database])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(review.stdout.utf8)) as? [String: Any], "\(review.stdout)\(review.stderr)")
        let allowed = (report["allowed"] as? [[String: Any]] ?? []).compactMap { $0["remote_address"] as? String }
        #expect(Set(allowed) == ["203.0.113.10", "203.0.113.20"], "\(allowed)")
        let rejected443 = (report["rejected"] as? [[String: Any]] ?? []).filter { $0["remote_port"] as? Int == 443 }.compactMap { $0["remote_address"] as? String }
        #expect(rejected443.contains("203.0.113.30") && !rejected443.contains("203.0.113.10"))
    }

    @Test("an address is named only by answers that preceded the connection: a connection opened before any lookup carries none")
    func onlyPrecedingAnswersName() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try NameScenario(lab: lab, zone: ["203.0.113.40 later.example"])
        let agent = try scenario.startAgent(binary: cordon, flushInterval: 0.2)
        #expect(try scenario.connect("203.0.113.40"))
        usleep(2_500_000)   // past the reading skew: the answer comes after the connection
        #expect(try scenario.lookup("later.example") == ["203.0.113.40"])
        usleep(700_000)
        #expect(lab.stop(agent) == 0)
        let flow = try lab.flows(cordon, database: scenario.database, filters: ["--port", "443"]).first { $0.remote == "203.0.113.40" }
        #expect(flow?["remote_names"] as? [String] == [], "the lookup came after the connection")
        #expect(try names(lab, cordon, scenario.database)["later.example"] == ["203.0.113.40"], "the name is learned all the same")
    }

    @Test("learned names survive a restart of the agent and keep naming connections after it")
    func namesSurviveRestart() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try NameScenario(lab: lab, zone: ["203.0.113.50 kept.example"])
        var agent = try scenario.startAgent(binary: cordon)
        #expect(try scenario.lookup("kept.example") == ["203.0.113.50"])
        usleep(800_000)
        #expect(lab.stop(agent) == 0)
        agent = try scenario.startAgent(binary: cordon)
        // No lookup this time: the answer from before the restart (TTL 300) still holds.
        #expect(try scenario.connect("203.0.113.50"))
        usleep(800_000)
        #expect(lab.stop(agent) == 0)
        let flow = try lab.flows(cordon, database: scenario.database, filters: ["--port", "443"]).first { $0.remote == "203.0.113.50" }
        #expect(flow?["remote_names"] as? [String] == ["kept.example"])
    }

    /// Approves a ruleset file in the host's database.
    func approve(_ lab: Lab, _ cordon: String, _ scenario: NameScenario, _ text: String) throws {
        let file = lab.directory + "/ruleset-\(UInt32.random(in: 0...UInt32.max)).yaml"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try lab.run(scenario.host, [cordon, "approve", file, "--operator", "analyst", "--accept-risk", "--db", scenario.database])
        guard result.succeeded else { throw LabError("approve: \(result.stdout)\(result.stderr)") }
    }

    func cordon(_ lab: Lab, _ cordon: String, _ scenario: NameScenario, _ arguments: [String]) throws -> CommandResult {
        try lab.run(scenario.host, [cordon] + arguments + ["--db", scenario.database, "--socket", scenario.socket], timeout: 60)
    }

    static let byName = """
        networks:
          - name: snap-store
            entries: [api.snapcraft.io, "*.s3.example", "**.deep.example"]
            services: [tcp/443]
        outgoing:
          - to: snap-store
        """

    @Test("a ruleset with names is refused, saying why, when the agent cannot hold DNS answers (its queue taken); the kernel keeps discovery")
    func namesRefusedWithoutTheQueue() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try NameScenario(lab: lab, zone: ["203.0.113.10 api.snapcraft.io"])
        // Another program holds the agent's queue in the host's namespace before the agent starts.
        let group = CordonTables.NameCapture.group(after: CordonTables.defaultLogGroup)
        let taken = try lab.inNamespace(scenario.host) { try PacketQueue(number: group) }
        let agent = try scenario.startAgent(binary: cordon)
        let status = try self.cordon(lab, cordon, scenario, ["status", "--json"])
        let names = (try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["names"] as? [String: Any]
        #expect(names != nil && names?["hold"] == nil, "no hold without the queue: \(status.stdout)")
        try approve(lab, cordon, scenario, Self.byName)
        let enforce = try self.cordon(lab, cordon, scenario, ["enforce", "--operator", "ivy"])
        #expect(enforce.status == 1, "\(enforce.stdout)\(enforce.stderr)")
        #expect(enforce.stderr.contains("cannot hold DNS answers in queue \(group)") && enforce.stderr.contains("nothing changed"), "\(enforce.stderr)")
        #expect(try lab.run(scenario.host, ["nft", "list", "table", "inet", "cordon"]).stdout.contains("policy accept"), "still discovery")
        #expect(try scenario.connect("api.snapcraft.io"), "discovery allows everything")
        #expect(lab.stop(agent) == 0)
        withExtendedLifetime(taken) {}
    }

    @Test("enforcing by name: a name approved in discovery keeps working after its addresses change, the first connection after each lookup succeeds; other names and addresses are refused; wildcard depths as documented")
    func enforcingNames() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let zone = ["203.0.113.10 api.snapcraft.io", "203.0.113.60 other.example", "203.0.113.61 a.s3.example",
                    "203.0.113.62 a.b.s3.example", "203.0.113.63 s3.example", "203.0.113.64 x.y.deep.example"]
            + (1...200).map { "198.51.100.\($0) many.s3.example" }
        let scenario = try NameScenario(lab: lab, zone: zone,
                                        records: ["--host-record=six.s3.example,2001:db8:cafe::61", "--host-record=zero.s3.example,203.0.113.65,0"])
        let agent = try scenario.startAgent(binary: cordon)
        #expect(try scenario.connect("api.snapcraft.io"), "discovery allows everything")
        try approve(lab, cordon, scenario, Self.byName)
        let enforce = try self.cordon(lab, cordon, scenario, ["enforce", "--operator", "ivy"])
        #expect(enforce.succeeded, "\(enforce.stdout)\(enforce.stderr)")
        #expect(try self.cordon(lab, cordon, scenario, ["confirm", "--operator", "ivy"]).succeeded)
        let table = try lab.run(scenario.host, ["nft", "list", "table", "inet", "cordon"]).stdout
        // The NFQUEUE target, which nft 1.0.6 lists as nothing after the match: held, not copied.
        #expect(table.contains("th sport @dns_v4") && !table.contains("cordon-dns"), "the answers are held while names are enforced:\n\(table)")
        #expect(table.contains("203.0.113.10"), "the address learned in discovery is in force at once:\n\(table)")

        #expect(try scenario.connect("api.snapcraft.io"))
        // The zone moves the name: the next lookup's address is allowed before the program sees it.
        for (round, address) in ["203.0.113.11", "203.0.113.12", "203.0.113.13"].enumerated() {
            try scenario.setZone(zone.filter { !$0.hasSuffix(" api.snapcraft.io") } + ["\(address) api.snapcraft.io"])
            #expect(try scenario.lookup("api.snapcraft.io", family: "ahostsv4") == [address], "round \(round): the resolver moved it")
            #expect(try scenario.connect("api.snapcraft.io"), "round \(round): the first connection to \(address) succeeds")
        }
        #expect(!(try scenario.connect("203.0.113.99")), "an address no name gave is refused")
        #expect(!(try scenario.connect("other.example")), "a name not in the ruleset is refused")
        #expect(try scenario.connect("a.s3.example"), "*. allows one label")
        #expect(!(try scenario.connect("a.b.s3.example")), "*. does not allow two labels")
        #expect(!(try scenario.connect("s3.example")), "*. does not allow the bare domain")
        #expect(try scenario.connect("x.y.deep.example"), "**. allows any depth")
        #expect(try scenario.connect("six.s3.example", family: "TCP6"), "AAAA answers fill the IPv6 set")
        #expect(try scenario.connect("zero.s3.example"), "TTL 0: the floor keeps the address for the connection")
        // 200 records: truncated over UDP, retried over TCP; the TCP answer is held like any other.
        let many = try scenario.lookup("many.s3.example", family: "ahostsv4")
        #expect(many.count == 200)
        let set = try lab.run(scenario.host, ["nft", "list", "set", "inet", "cordon", "names_1_v4"]).stdout
        #expect(set.components(separatedBy: "198.51.100.").count - 1 == 200, "all 200 addresses, most only in the TCP answer, are in the set")
        #expect(try many.last.map { try scenario.connect($0) } == true)

        let status = try #require(try JSONSerialization.jsonObject(with: Data(try self.cordon(lab, cordon, scenario, ["status", "--json"]).stdout.utf8)) as? [String: Any])
        let hold = try #require((status["names"] as? [String: Any])?["hold"] as? [String: Any], "\(status)")
        #expect(hold["bound"] as? Bool == true)
        #expect((hold["updates"] as? Int ?? 0) >= 5)
        #expect(hold["failed_updates"] as? Int == 0 && hold["ceiling_reached"] as? Int == 0)

        // An element's expiry (here: deleted at once) ends no connection already open; it only
        // keeps new ones out until the next lookup.
        let session = try lab.spawn(scenario.host, ["sh", "-c", "(echo one; sleep 2; echo two) | socat -T5 - TCP:203.0.113.13:443 > \(lab.directory)/session.out"])
        try Integration.waitUntil("the session is established") {
            try lab.run(scenario.host, ["ss", "-Htn", "state", "established", "dst", "203.0.113.13"]).stdout.contains(":443")
        }
        let deleted = try lab.run(scenario.host, ["nft", "delete", "element", "inet", "cordon", "names_1_v4", "{ 203.0.113.13 }"])
        #expect(deleted.succeeded, "\(deleted.stderr)")
        #expect(!(try scenario.connect("203.0.113.13")), "a new connection needs the element")
        _ = session.wait(timeout: 10)
        let echoed = (try? String(contentsOfFile: lab.directory + "/session.out", encoding: .utf8)) ?? ""
        #expect(echoed.contains("one") && echoed.contains("two"), "the session opened before the expiry kept working: \(echoed)")
        #expect(try scenario.connect("api.snapcraft.io"), "the next lookup puts it back")

        // The agent killed: lookups still answer (bypass), learned addresses stay allowed.
        agent.signal(SIGKILL)
        _ = agent.wait(timeout: 5)
        #expect(try scenario.lookup("api.snapcraft.io", family: "ahostsv4") == ["203.0.113.13"], "DNS works without the agent")
        #expect(try scenario.connect("api.snapcraft.io"), "the learned address is still in the kernel's set")
        // Restarted, it carries the kernel's elements over into the table it installs.
        let restarted = try scenario.startAgent(binary: cordon)
        #expect(try scenario.connect("203.0.113.13"), "after a restart the address learned before it is still allowed")
        #expect(try scenario.connect("api.snapcraft.io"))
        #expect(lab.stop(restarted) == 0)
    }

    @Test("a collector given by name is in the channel at its addresses, reachable while enforcing and isolated, and follows the name when it moves")
    func collectorByName() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let zone = ["203.0.113.200 collector.example"]
        let scenario = try NameScenario(lab: lab, zone: zone)
        _ = try lab.spawn(scenario.net, ["socat", "TCP-LISTEN:9000,fork,reuseaddr", "PIPE"])
        try Integration.waitUntil("the collector listens") { try lab.run(scenario.net, ["ss", "-Hltn", "sport = :9000"]).stdout.contains(":9000") }
        let agent = try scenario.startAgent(binary: cordon, extra: ["--collector", "collector.example:9000"])
        func run(_ arguments: [String]) throws -> CommandResult { try self.cordon(lab, cordon, scenario, arguments) }
        func reaches(_ address: String) throws -> Bool { try scenario.connect(address, port: 9000) }
        let status = try run(["status"]).stdout
        #expect(status.contains("collector 203.0.113.200:9000") && status.contains("collector.example:9000 (by name)"), "\(status)")
        try approve(lab, cordon, scenario, Self.byName)
        let enforce = try run(["enforce", "--operator", "ivy"])
        #expect(enforce.succeeded, "the check reached the collector by its resolved address: \(enforce.stdout)\(enforce.stderr)")
        #expect(try run(["confirm", "--operator", "ivy"]).succeeded)
        #expect(try reaches("203.0.113.200"))
        #expect(!(try reaches("203.0.113.202")), "only the collector's address is in the channel")
        #expect(try run(["isolate", "--operator", "ivy", "--reason", "test"]).succeeded)
        #expect(try reaches("203.0.113.200"), "isolated, the collector stays reachable")
        // The name moves; SIGHUP makes the agent resolve it now rather than within 30 s.
        try scenario.setZone(["203.0.113.201 collector.example"])
        agent.signal(SIGHUP)
        var moved = false
        for _ in 0..<50 where !moved {
            usleep(200_000)
            moved = try run(["status"]).stdout.contains("collector 203.0.113.201:9000")
        }
        #expect(moved, "the channel follows the name")
        #expect(try reaches("203.0.113.201"), "isolated, the collector's new address is reachable")
        #expect(try reaches("203.0.113.200"), "its old address stays for sessions still open to it")
        #expect(!(try reaches("203.0.113.202")))
        let log = try run(["log"]).stdout
        #expect(log.contains("collector collector.example"), "the re-install is in the decision log:\n\(log)")
    }
}
