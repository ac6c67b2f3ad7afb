import CordonCore
import CordonServer
import CordonWire
import Foundation
import Testing

/// The bounds on what agents send: the validation itself (no root, no database), and the OpenAPI
/// document stating the same numbers the server enforces.
struct LimitsTests {
    /// A row as an agent uploads it (FlowRecord is made from the kernel's tuples, or decoded).
    static func flow(local: String = "192.0.2.10", remote: String = "198.51.100.1", proto: String = "tcp",
                     first: String = "2026-11-22T21:05:48Z", last: String = "2026-11-22T21:06:00Z", names: [String] = []) -> FlowRecord {
        let row: [String: Any] = ["direction": "outbound", "protocol": proto, "family": "ipv4", "local_address": local, "remote_address": remote,
                                  "remote_port": 443, "connections": 1, "packets": 2, "bytes": 3, "first_seen": first, "last_seen": last,
                                  "verdict": "allowed", "remote_names": names]
        return try! Wire.decode(FlowRecord.self, from: try! JSONSerialization.data(withJSONObject: row))
    }

    static let now: Int64 = 1_800_000_000 // 2027-01-15

    static func problem(_ flow: FlowRecord) -> FieldProblem? {
        do { try Validation.flow(flow, now: now) } catch { return error }
        return nil
    }

    @Test("flow rows: addresses, prefixes, protocols, times and names are parsed; each refusal names its field")
    func flows() {
        #expect(Self.problem(Self.flow()) == nil)
        #expect(Self.problem(Self.flow(remote: "198.51.100.0/24")) == nil, "a rolled-up remote is a prefix")
        #expect(Self.problem(Self.flow(local: "2001:db8::1", remote: "2001:db8::2", proto: "icmpv6")) == nil)
        #expect(Self.problem(Self.flow(names: ["api.example.com", "x.example.com."])) == nil)
        #expect(Self.problem(Self.flow(local: "not an address"))?.field == "local_address")
        #expect(Self.problem(Self.flow(remote: "<script>"))?.field == "remote_address")
        #expect(Self.problem(Self.flow(proto: "tcp; drop"))?.field == "protocol")
        #expect(Self.problem(Self.flow(first: "yesterday"))?.field == "first_seen")
        #expect(Self.problem(Self.flow(first: "1970-01-01T00:00:00Z"))?.field == "first_seen", "a clock never set")
        #expect(Self.problem(Self.flow(last: "2030-01-01T00:00:00Z"))?.field == "last_seen", "years ahead of the server")
        #expect(Self.problem(Self.flow(first: "2026-11-22T21:07:00Z", last: "2026-11-22T21:06:00Z"))?.field == "last_seen")
        #expect(Self.problem(Self.flow(names: ["ok.example", "zz\u{1B}[2K"]))?.field == "remote_names[1]")
        #expect(Self.problem(Self.flow(names: [String(repeating: "a", count: 64) + ".example"]))?.field == "remote_names[0]")
        #expect(Self.problem(Self.flow(names: (0..<17).map { "n\($0).example" }))?.field == "remote_names")
    }

    @Test("enrollment: every field bounded, addresses parsed, tags counted; the problem names the field")
    func enrollment() {
        func problem(hostname: String = "web-1", machineID: String = "m", addresses: [String] = ["192.0.2.10"], version: String = "0.3.0",
                     tags: [String: String] = ["tier": "web"]) -> FieldProblem? {
            do {
                try Validation.enrollment(EnrollRequest(secret: "s", hostname: hostname, machineID: machineID, addresses: addresses,
                                                        agentVersion: version, tags: tags))
            } catch { return error }
            return nil
        }
        #expect(problem() == nil)
        #expect(problem(hostname: "")?.field == "hostname")
        #expect(problem(hostname: String(repeating: "h", count: 254))?.field == "hostname")
        #expect(problem(machineID: String(repeating: "m", count: 900_000))?.field == "machine_id")
        #expect(problem(version: String(repeating: "v", count: 65))?.field == "agent_version")
        #expect(problem(addresses: (0..<65).map { "192.0.2.\($0)" })?.field == "addresses")
        #expect(problem(addresses: ["192.0.2.10", "my address"])?.field == "addresses[1]")
        #expect(problem(tags: Dictionary(uniqueKeysWithValues: (0..<33).map { ("k\($0)", "v") }))?.field == "tags")
        #expect(problem(tags: ["role": String(repeating: "x", count: 100_000)])?.field == "tags.role")
        #expect(problem(tags: ["role": ""])?.field == "tags.role")
    }

    @Test("the OpenAPI document states the limits the server enforces")
    func documented() throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.json.utf8)) as? [String: Any])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        func properties(_ path: [String]) throws -> [String: Any] {
            var node: Any? = schemas
            for key in path { node = (node as? [String: Any])?[key] ?? ((node as? [String: Any])?["oneOf"] as? [Any])?.last.flatMap { ($0 as? [String: Any])?[key] } }
            return try #require(node as? [String: Any], "\(path)")
        }
        let enroll = try properties(["EnrollRequest", "properties"])
        #expect((enroll["hostname"] as? [String: Any])?["maxLength"] as? Int == Limits.hostname)
        #expect((enroll["machine_id"] as? [String: Any])?["maxLength"] as? Int == Limits.machineID)
        #expect((enroll["agent_version"] as? [String: Any])?["maxLength"] as? Int == Limits.agentVersion)
        #expect((enroll["secret"] as? [String: Any])?["maxLength"] as? Int == Limits.secret)
        #expect((enroll["addresses"] as? [String: Any])?["maxItems"] as? Int == Limits.addresses)
        #expect((enroll["tags"] as? [String: Any])?["maxProperties"] as? Int == Limits.tags)
        #expect(((enroll["tags"] as? [String: Any])?["additionalProperties"] as? [String: Any])?["maxLength"] as? Int == Limits.tagValue)
        let status = try properties(["AgentReport", "properties", "status", "properties"])
        #expect((status["agent_version"] as? [String: Any])?["maxLength"] as? Int == Limits.agentVersion)
        #expect((status["addresses"] as? [String: Any])?["maxItems"] as? Int == Limits.addresses)
        #expect((status["ruleset_digest"] as? [String: Any])?["maxLength"] as? Int == Limits.rulesetDigest)
        let local = try properties(["AgentReport", "properties", "local", "properties"])
        #expect((local["operator"] as? [String: Any])?["maxLength"] as? Int == Limits.localOperator)
        #expect((local["reason"] as? [String: Any])?["maxLength"] as? Int == Limits.localReason)
        let flow = try properties(["Flow", "properties"])
        #expect((flow["remote_names"] as? [String: Any])?["maxItems"] as? Int == Limits.namesPerFlow)
        #expect(((flow["remote_names"] as? [String: Any])?["items"] as? [String: Any])?["maxLength"] as? Int == Limits.name)
        #expect((flow["protocol"] as? [String: Any])?["maxLength"] as? Int == Limits.protocolName)
    }

    @Test("text shown on a terminal: control characters and bidirectional overrides are escaped, the rest untouched")
    func terminalSafe() {
        #expect("db-01".terminalSafe == "db-01")
        #expect("zz\u{1B}[2K\rdb-01 ISOLATED".terminalSafe == "zz\\e[2K\\rdb-01 ISOLATED")
        #expect("a\nb\tc".terminalSafe == "a\\nb\\tc")
        #expect("x\u{202E}y\u{9B}z\u{7F}".terminalSafe == "x\\u{202e}y\\u{9b}z\\u{7f}")
        #expect("héllo wörld ✓".terminalSafe == "héllo wörld ✓")
        var table = TextTable(header: ["HOST"])
        table.add(["evil\n01  fake-row"])
        #expect(table.text.split(separator: "\n").count == 2, "a newline in a cell draws no row: \(table.text)")
    }
}
