import CordonLab
import Foundation
import Testing

/// The command-line contract that needs no root: exit codes and messages.
@Suite struct CLITests {
    func cordon(_ arguments: [String]) throws -> CommandResult {
        let binary = try DiscoveryScenario.cordonBinary()
        let directory = NSTemporaryDirectory() + "cordon-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/out", err = directory + "/err"
        let child = try Child([binary] + arguments, output: out, errors: err)
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
        (["nonsense"], "nonsense"),
    ])
    func invalidInputExitsTwoNamingTheOption(_ arguments: [String], _ named: String) throws {
        let result = try cordon(arguments)
        #expect(result.status == 2)
        #expect(result.stderr.contains(named), "\(result.stderr)")
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
