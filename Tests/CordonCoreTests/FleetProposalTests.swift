import CordonCore
import Foundation
import Testing

@Suite struct FleetProposalTests {
    static func record(_ local: String, _ transport: UInt8, _ remote: String, _ port: UInt16, connections: UInt64 = 5) -> FlowRecord {
        FlowRecord(key: FlowKey(direction: .outbound, transport: transport, local: IPAddress(local)!, remote: IPPrefix(IPAddress(remote)!), port: port),
                   stats: FlowStats(connections: connections, firstSeen: 1_799_000_000, lastSeen: 1_800_000_000))
    }

    static func hosts() -> [FleetProposal.Host] {
        (1...3).map { n in
            let local = "192.0.2.\(10 + n)"
            var flows = [record(local, IPProtocolNumber.udp, "192.0.2.53", 53), record(local, IPProtocolNumber.tcp, "198.51.100.20", 5432)]
            if n == 1 { flows.append(record(local, IPProtocolNumber.tcp, "203.0.113.9", 6379, connections: 2)) }
            return FleetProposal.Host(name: "web-\(n)", flows: flows)
        }
    }

    static func propose(minCoverage: Int) throws -> FleetProposal.Result {
        let standard = try RulesetParser.parse(try String(contentsOfFile: ProposerTests.standardPath, encoding: .utf8), file: ProposerTests.standardPath)
        return FleetProposal.propose(selector: #"role == "web""#, hosts: hosts(),
                                     peers: [FleetProposal.Peer(address: IPAddress("198.51.100.20")!, hostname: "db-1", tags: ["role": "db", "env": "prod"]),
                                             FleetProposal.Peer(address: IPAddress("198.51.100.21")!, hostname: "db-2", tags: ["role": "db", "env": "dev"])],
                                     since: 1_700_000_000, minCoverage: minCoverage, standard: standard, names: ServiceNames())
    }

    @Test("a host's outliers are listed busiest first and bounded; the count says how many more, and the total counts them all")
    func outliersAreBounded() throws {
        let standard = try RulesetParser.parse(try String(contentsOfFile: ProposerTests.standardPath, encoding: .utf8), file: ProposerTests.standardPath)
        var hosts = Self.hosts()
        let noisy = (0..<(FleetProposal.outliersShown + 5)).map { n in
            Self.record("192.0.2.11", IPProtocolNumber.tcp, "203.0.113.\(n + 1)", UInt16(7000 + n), connections: UInt64(n + 1))
        }
        hosts[0] = FleetProposal.Host(name: "web-1", flows: noisy)
        let result = FleetProposal.propose(selector: "all()", hosts: hosts, peers: [], since: 1_700_000_000, minCoverage: 50, standard: standard,
                                           names: ServiceNames())
        #expect(result.outliers == FleetProposal.outliersShown + 5)
        let lines = result.text.split(separator: "\n").filter { $0.hasPrefix("#   web-1: outbound tcp/") }
        #expect(lines.count == FleetProposal.outliersShown)
        #expect(lines.first?.hasPrefix("#   web-1: outbound tcp/\(7000 + FleetProposal.outliersShown + 4)") == true, "the busiest first: \(lines.first ?? "")")
        #expect(result.text.contains("#   web-1: and 5 more (all of its flows: GET /api/v1/hosts/{id}/flows)"))
    }

    @Test("the tier's networks say how many hosts agree; what one host does alone is its outlier, not the tier's rule")
    func coverageAndOutliers() throws {
        let result = try Self.propose(minCoverage: 50)
        #expect(result.hosts == 3 && result.flows == 7 && result.candidates == 1 && result.outliers == 1)
        #expect(result.text.contains("# dns: seen on 3 of 3 hosts"), "\(result.text)")
        #expect(result.text.contains("seen on 3 of 3 hosts, first seen"))
        let outliers = try #require(result.text.range(of: "# Outliers:"))
        #expect(result.text[outliers.lowerBound...].contains("#   web-1: outbound tcp/6379"))
        #expect(!result.text[..<outliers.lowerBound].contains("6379"), "an outlier is never among the tier's candidates")
        // What the analyst gets parses, with the tier's selector.
        let ruleset = try RulesetParser.parse(result.text, file: "proposed.yaml")
        #expect(ruleset.appliesTo.expression?.description == #"role == "web""#)
        #expect(ruleset.networks.map(\.name) == ["dns"])
        // At a lower bar the outlier is a candidate like the rest.
        let all = try Self.propose(minCoverage: 30)
        #expect(all.candidates == 2 && all.outliers == 0 && !all.text.contains("# Outliers:"))
    }

    @Test("an east-west flow to enrolled hosts is named by the tag they share, not by address")
    func eastWest() throws {
        let result = try Self.propose(minCoverage: 50)
        #expect(result.text.contains("# east-west: enrolled hosts with role=db (db-1)"), "\(result.text)")
        #expect(result.text.contains("  # - name: east-west-role-db-out-tcp-5432"), "\(result.text)")
        #expect(result.text.contains("# - to: east-west-role-db-out-"))
    }
}
