import CordonCore
import CordonLab
import CordonStore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The command-line contract that needs no root: exit codes and messages.
@Suite struct CLITests {
    func cordon(_ arguments: [String]) throws -> CommandResult {
        let binary = try DiscoveryScenario.cordonBinary()
        let directory = NSTemporaryDirectory() + "cordon-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/out", err = directory + "/err"
        // An `agent` case that parses after all would start an agent: as root, only ever in a
        // network namespace of its own that dies with it, never the machine's.
        // Its files go to the test's directory, not /var/lib/cordon.
        let confined = arguments.first == "agent" && geteuid() == 0 ? ["unshare", "--net", "--"] : []
        let files = arguments.first == "agent" && !arguments.contains("--db") ? ["--db", directory + "/cordon.db", "--socket", directory + "/cordon.sock"] : []
        let child = try Child(confined + [binary] + arguments + files, output: out, errors: err)
        let status = try #require(child.wait(timeout: 30))
        return CommandResult(status: status, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    @Test func statusWithNoAgentSaysSoAndExitsOne() throws {
        let result = try cordon(["status", "--socket", "/nonexistent/cordon.sock"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no agent answers on /nonexistent/cordon.sock"))
    }

    @Test(arguments: [
        (["flows", "--direction", "sideways"], "--direction"),
        (["flows", "--protocol", "tcpp"], "--protocol"),
        (["flows", "--port", "70000"], "--port"),
        (["flows", "--since", "2 hours"], "--since"),
        (["agent", "--flush-interval", "0"], "--flush-interval"),
        (["agent", "--collector", "*.collector.example:9000"], "--collector"),
        (["agent", "--extra-allow", "icmp/192.0.2.1:80"], "--extra-allow"),
        (["agent", "--resolver", "dns"], "--resolver"),
        (["enforce", "--operator", "a", "--confirm-within", "0"], "--confirm-within"),
        (["enforce"], "--operator"),
        (["flows", "--verdict", "denied"], "--verdict"),
        (["nonsense"], "nonsense"),
    ])
    func invalidInputExitsTwoNamingTheOption(_ arguments: [String], _ named: String) throws {
        let result = try cordon(arguments)
        #expect(result.status == 2)
        #expect(result.stderr.contains(named), "\(result.stderr)")
    }

    @Test("approve stores exactly the bytes it reviewed, while the file is swapped under it")
    func approveStoresWhatItReviewed() throws {
        let directory = NSTemporaryDirectory() + "cordon-approve-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = directory + "/cordon.db"
        _ = try FlowStore(path: database)
        try """
            networks:
              - name: web
                entries: [198.51.100.0/24]
                services: [tcp/443]
            outgoing:
              - to: web
            """.write(toFile: directory + "/valid", atomically: true, encoding: .utf8)
        try "networks: [\n".write(toFile: directory + "/invalid", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: directory + "/valid", toPath: directory + "/x.yaml")
        // Swaps the file between the two, whole (rename), for at most 20 s.
        let swapper = try Child(["sh", "-c", """
            cd \(directory); end=$(( $(date +%s) + 20 ))
            while [ $(date +%s) -lt $end ]; do cp invalid t; mv t x.yaml; cp valid t; mv t x.yaml; done
            """])
        defer { swapper.signal(SIGKILL); _ = swapper.wait(timeout: 5) }
        var outcomes = Set<Int32>()
        for _ in 0..<40 {
            outcomes.insert(try cordon(["approve", directory + "/x.yaml", "--operator", "a", "--accept-risk", "--db", database]).status)
        }
        let versions = try FlowStore(readingFrom: database).rulesetVersions()
        #expect(!versions.isEmpty && outcomes.contains(2), "both files were approved or refused at least once: \(outcomes)")
        for version in versions {
            #expect(throws: Never.self, "version \(version.version) is the valid file") {
                _ = try RulesetParser.parse(version.content, file: "stored")
            }
            #expect(ContentDigest.hex(version.content) == version.digest)
        }
    }

    @Test("a ruleset or config nested 7,000 levels deep is refused with the parser's error, not a crash")
    func deeplyNestedYAMLIsRefused() throws {
        let directory = NSTemporaryDirectory() + "cordon-deep-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/deep.yaml", database = directory + "/cordon.db"
        try ("networks: " + String(repeating: "[", count: 7000) + String(repeating: "]", count: 7000) + "\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        _ = try FlowStore(path: database)
        for arguments in [["review", file], ["approve", file, "--operator", "a"], ["render", "--ruleset", file],
                          ["propose", "--networks", file], ["agent", "--config", file], ["isolate", "--operator", "a", "--config", file]] {
            let result = try cordon(arguments + ["--db", database, "--socket", directory + "/none.sock"])
            #expect(result.status == 2 && result.stderr.contains("deep.yaml:1") && result.stderr.contains("nested deeper"),
                    "\(arguments[0]): exit \(result.status): \(result.stderr)")
        }
    }

    @Test func enforceWithoutAnAgentRefusesRatherThanApplyingWithoutAWayBack() throws {
        let result = try cordon(["enforce", "--operator", "a", "--socket", "/nonexistent/cordon.sock"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("needs the running agent"), "\(result.stderr)")
    }

    @Test func renderPrintsTheTableAsTextAndJSONWithoutAgentOrKernel() throws {
        let directory = NSTemporaryDirectory() + "cordon-render-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
            networks:
              - name: web
                entries: [198.51.100.0/24, 198.51.101.0/24]
                services: [tcp/443]
            outgoing:
              - to: web
            """.write(toFile: directory + "/r.yaml", atomically: true, encoding: .utf8)
        try "collectors: [\"203.0.113.9:9000\"]\nresolvers: [192.0.2.53]\nlog_group: 42\n"
            .write(toFile: directory + "/agent.yaml", atomically: true, encoding: .utf8)
        let text = try cordon(["render", "--ruleset", directory + "/r.yaml", "--config", directory + "/agent.yaml"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("ip daddr & 255.255.254.0 . meta l4proto . th dport @allow_out_v4_p23"), "adjacent networks merge: \(text.stdout)")
        #expect(text.stdout.contains("198.51.100.0 . tcp . 443"))
        #expect(text.stdout.contains("203.0.113.9 . tcp . 9000"))
        #expect(text.stdout.contains("log prefix \"cordon-out\" group 42"))
        let json = try cordon(["render", "--json", "--ruleset", directory + "/r.yaml", "--config", directory + "/agent.yaml"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let sets = try #require(object["sets"] as? [[String: Any]])
        #expect(sets.first { $0["name"] as? String == "allow_out_v4_p23" }?["elements"] as? [String] == ["198.51.100.0 . tcp . 443"])
        #expect(object["management"] as? String == "collector 203.0.113.9:9000, resolver 192.0.2.53")
        let chains = try #require(object["chains"] as? [[String: Any]])
        #expect(chains.map { $0["policy"] as? String } == ["drop", "accept", "drop"])
    }

    @Test func flowsOnAMissingDatabaseExitsOne() throws {
        let result = try cordon(["flows", "--db", "/nonexistent/cordon.db"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/cordon.db"))
    }

    @Test func proposeWithABrokenNetworksFileNamesIt() throws {
        let path = NSTemporaryDirectory() + "cordon-networks-\(UUID().uuidString).yaml"
        try "networks:\n  - name: ssh\n    entries: [0.0.0.0/0]\n    services: [tcp/22x]\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try cordon(["propose", "--networks", path, "--db", "/nonexistent/cordon.db"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(path):4:"), "\(result.stderr)")
        #expect(result.stderr.contains("networks[0].services[0]"))
    }

    @Test func reviewOfAnInvalidRulesetExitsTwoWithItsLocation() throws {
        let path = NSTemporaryDirectory() + "cordon-rules-\(UUID().uuidString).yaml"
        try "networks:\n  - name: dns\n    entries: [192.0.2.53/24]\n    services: [udp/53]\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try cordon(["review", path, "--db", "/nonexistent/cordon.db"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(path):3:"), "\(result.stderr)")
        #expect(result.stderr.contains("did you mean 192.0.2.0/24"))
    }

    @Test func proposeWithoutADatabaseExitsOne() throws {
        let result = try cordon(["propose", "--db", "/nonexistent/cordon.db"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/cordon.db"))
    }

    @Test func agentWithABadConfigNamesFileLineAndField() throws {
        let path = NSTemporaryDirectory() + "cordon-bad-\(UUID().uuidString).yaml"
        try "flush_interval: 2\nremote_cap: -5\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try cordon(["agent", "--config", path, "--db", "/nonexistent/x.db"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(path):2: remote_cap"), "\(result.stderr)")
    }

    @Test func helpListsTheSubcommands() throws {
        let result = try cordon(["--help"])
        #expect(result.status == 0)
        for name in ["agent", "status", "flows", "propose", "demo"] { #expect(result.stdout.contains(name)) }
    }
}
