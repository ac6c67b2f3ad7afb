import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// When namespace tests run: as root with the tools present, or always when CI demands them
/// (CORDON_REQUIRE_NETNS=1), in which case a missing prerequisite fails the test instead.
enum Integration {
    static var required: Bool { ProcessInfo.processInfo.environment["CORDON_REQUIRE_NETNS"] == "1" }

    static var unavailableReason: String? {
        if geteuid() != 0 { return "needs root to create network namespaces" }
        let missing = DiscoveryScenario.missingTools()
        if !missing.isEmpty { return "needs \(missing.joined(separator: ", "))" }
        return nil
    }

    static var shouldRun: Bool { required || unavailableReason == nil }

    static var skipNote: Comment {
        Comment(rawValue: "skipped: \(unavailableReason ?? "") (set CORDON_REQUIRE_NETNS=1 to make this a failure)")
    }

    static func cordon() throws -> String { try DiscoveryScenario.cordonBinary() }

    /// Waits for a condition itself, never for a guessed time: polls every 50 ms, up to `seconds`
    /// (generous: a loaded machine is slow, and only the condition decides).
    static func waitUntil(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if try condition() { return }
            usleep(50_000)
        } while Date() < deadline
        throw LabError("timed out after \(seconds) s waiting until \(what)")
    }
}

/// A flow from `cordon flows --json`, read as plain JSON: the test checks the contract, not a
/// Swift type that could drift with it.
struct JSONFlow {
    let object: [String: Any]
    subscript(_ field: String) -> Any? { object[field] }
    var direction: String? { object["direction"] as? String }
    var proto: String? { object["protocol"] as? String }
    var localPort: Int? { object["local_port"] as? Int }
    var remotePort: Int? { object["remote_port"] as? Int }
    var remote: String? { object["remote_address"] as? String }
    var local: String? { object["local_address"] as? String }
    var connections: Int { object["connections"] as? Int ?? -1 }
}

extension Lab {
    /// Runs `cordon flows --json` on a database and parses it.
    func flows(_ cordon: String, database: String, filters: [String] = []) throws -> [JSONFlow] {
        let result = try run(nil, [cordon, "flows", "--json", "--db", database] + filters)
        guard result.succeeded else { throw LabError("cordon flows failed: \(result.stderr)") }
        let parsed = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        guard let array = parsed as? [[String: Any]] else { throw LabError("cordon flows --json is not an array") }
        return array.map(JSONFlow.init)
    }

    /// The interface that holds an address in a namespace.
    func interface(in namespace: String, holding address: String) throws -> String {
        let line = try run(namespace, ["ip", "-o", "addr", "show"]).stdout.split(separator: "\n")
            .first { $0.contains(" \(address)/") }
        guard let name = line?.split(separator: " ").dropFirst().first else { throw LabError("no interface holds \(address)") }
        return String(name)
    }

    func nftTables(_ namespace: String) throws -> String {
        try run(namespace, ["nft", "list", "tables"]).stdout
    }
}
