import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The real agent binary in throwaway namespaces, real traffic from socat and ping, assertions on
/// what `cordon flows --json` reports afterwards.
@Suite(.serialized, .enabled(if: Integration.shouldRun, Integration.skipNote))
struct DiscoveryTests {
    typealias S = DiscoveryScenario

    @Test func recordsRealTrafficBothWaysIncludingSessionsOlderThanTheAgent() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab)
        try scenario.openLongLivedSessions()
        let database = scenario.database, socket = scenario.socket
        // No timed flush: whatever is on disk afterwards was written by the flush on SIGTERM.
        let agent = try scenario.startAgent(binary: cordon, flushInterval: 3600)

        #expect(try lab.nftTables(scenario.host).contains("table inet cordon"))
        let traffic = try scenario.driveTraffic()
        // Once the agent has read the traffic's events (its flows are in memory, not on disk).
        var statusResult = try lab.run(nil, [cordon, "status", "--json", "--socket", socket])
        try Integration.waitUntil("the agent counted the traffic") {
            statusResult = try lab.run(nil, [cordon, "status", "--json", "--socket", socket])
            let counted = (try? JSONSerialization.jsonObject(with: Data(statusResult.stdout.utf8))) as? [String: Any]
            return (counted?["events"] as? Int ?? 0) >= 20 && (counted?["flows"] as? Int ?? 0) >= 9
        }
        #expect(statusResult.succeeded)
        let status = try #require(try JSONSerialization.jsonObject(with: Data(statusResult.stdout.utf8)) as? [String: Any])
        #expect(status["mode"] as? String == "discovery")
        #expect(status["isolated"] as? Bool == false)
        #expect(status["lost_events"] as? Int == 0)
        #expect((status["events"] as? Int ?? 0) >= 20)
        #expect((status["flows"] as? Int ?? 0) == 9)

        #expect(lab.stop(agent) == 0, "agent must exit 0 on SIGTERM")
        let mode = (try FileManager.default.attributesOfItem(atPath: database)[.posixPermissions] as? Int) ?? 0
        #expect(mode & 0o077 == 0, "the record is for root only, not mode \(String(mode, radix: 8))")
        let tables = try lab.nftTables(scenario.host)
        #expect(!tables.contains("table inet cordon"), "discovery table must be removed on a clean stop")
        #expect(tables.contains("table inet hostfw"), "other tables must be left alone")

        let flows = try lab.flows(cordon, database: database)
        func one(_ direction: String, _ proto: String, where match: (JSONFlow) -> Bool) -> JSONFlow? {
            let found = flows.filter { $0.direction == direction && $0.proto == proto && match($0) }
            #expect(found.count == 1, "expected one \(direction) \(proto) flow, found \(found.count): \(flows.map(\.object))")
            return found.first
        }
        // +1: the session opened before the agent, found by the start-up dump.
        let ssh = one("inbound", "tcp") { $0.localPort == 22 }
        #expect(ssh?.connections == traffic.inboundTCP22 + 1)
        #expect(ssh?.remote == S.peerV4)
        #expect(ssh?.local == S.hostV4)
        #expect(ssh?["remote_port"] is NSNull)
        #expect(one("inbound", "udp") { $0.localPort == 514 }?.connections == traffic.inboundUDP514)
        let https = one("outbound", "tcp") { $0.remotePort == 443 && $0.remote == S.peerV4 }
        #expect(https?.connections == traffic.outboundTCP443 + 1)
        #expect(https?["local_port"] is NSNull)
        #expect(one("outbound", "tcp") { $0.remote == S.peerV6 }?.connections == traffic.outboundTCP443v6)
        #expect(one("outbound", "udp") { $0.remotePort == 53 }?.connections == traffic.outboundUDP53)
        let echo = one("inbound", "icmp") { _ in true }
        #expect(echo?["icmp_type"] as? Int == 8)
        #expect(echo?["icmp_code"] as? Int == 0)
        #expect(one("inbound", "icmpv6") { _ in true }?["icmp_type"] as? Int == 128)
        #expect(one("outbound", "icmp") { _ in true }?.connections == traffic.outboundPing)
        let forwarded = one("forward", "tcp") { $0.remotePort == 8080 }
        #expect(forwarded?.connections == traffic.forwardTCP8080)
        #expect(forwarded?.local == S.farV4)
        #expect(flows.count == 9, "nothing else, in particular no loopback: \(flows.map(\.object))")
        #expect(!flows.contains { ($0.remote ?? "").hasPrefix("127.") || $0.remote == "::1" })
        for flow in flows {
            let family = flow["family"] as? String
            #expect(family == ((flow.remote ?? "").contains(":") ? "ipv6" : "ipv4"))
            #expect((flow["first_seen"] as? String)?.hasSuffix("Z") == true)
        }

        // Filters.
        #expect(try lab.flows(cordon, database: database, filters: ["--direction", "inbound"]).count == 4)
        #expect(try lab.flows(cordon, database: database, filters: ["--protocol", "udp"]).count == 2)
        #expect(try lab.flows(cordon, database: database, filters: ["--port", "443"]).count == 2)
        #expect(try lab.flows(cordon, database: database, filters: ["--since", "1h"]).count == 9)
    }

    @Test func restartContinuesTheSameDatabaseWithoutCountingTwice() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab)
        let database = scenario.database
        var agent = try scenario.startAgent(binary: cordon)
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        #expect(lab.stop(agent) == 0)
        // The two connections are still in the conntrack table (TIME_WAIT); the restarted agent's
        // dump must not count them again.
        agent = try scenario.startAgent(binary: cordon)
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        #expect(lab.stop(agent) == 0)
        let ssh = try lab.flows(cordon, database: database, filters: ["--port", "22"])
        #expect(ssh.count == 1)
        #expect(ssh.first?.connections == 3, "agent log:\n\((try? String(contentsOfFile: scenario.agentLog, encoding: .utf8)) ?? "")")
    }

    @Test func remotesPastTheCapRollUpIntoAPrefix() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab)
        let interface = try lab.interface(in: scenario.peer, holding: S.peerV4)
        let sources = (21...24).map { "192.0.2.\($0)" }
        for source in sources { try lab.run(scenario.peer, ["ip", "addr", "add", "\(source)/24", "dev", interface]) }
        let config = lab.directory + "/cordon.yaml"
        try "remote_cap: 2\nflush_interval: 0.2\n".write(toFile: config, atomically: true, encoding: .utf8)
        let database = scenario.database
        let agent = try scenario.startAgent(binary: cordon, extra: ["--config", config])
        for source in sources {
            let result = try lab.run(scenario.peer, ["socat", "-T2", "-", "TCP:\(S.hostV4):22,bind=\(source)"], input: "x\n")
            #expect(result.succeeded, "\(result.stderr)")
        }
        #expect(lab.stop(agent) == 0)
        let ssh = try lab.flows(cordon, database: database, filters: ["--port", "22"])
        #expect(Set(ssh.compactMap(\.remote)) == ["192.0.2.21", "192.0.2.22", "192.0.2.0/24"])
        #expect(ssh.first { $0.remote == "192.0.2.0/24" }?.connections == 2)
    }

    /// The README's first command: the demo runs to the end, keeps its record with --db, and
    /// leaves no namespace behind.
    @Test func demoRunsEndToEndAndCleansUp() throws {
        let cordon = try Integration.cordon()
        let directory = NSTemporaryDirectory() + "cordon-demo-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = directory + "/demo.db"
        let out = directory + "/out"
        let demo = try Child([cordon, "demo", "--db", database], output: out)
        let status = demo.wait(timeout: 120)
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(status == 0, "demo output:\n\(output)")
        #expect(output.contains("agent exited with 0"))
        // The proposal from the real run: the standard networks used, the leftovers as candidates.
        #expect(output.contains("  - name: ssh\n"))
        #expect(output.contains("  - name: dns\n"))
        #expect(output.contains("  # - name: in-syslog-udp-514\n"))
        #expect(output.contains("  # - name: out-https-tcp-443\n"))
        // Enforced: the unapproved https candidate refused at once, an unapproved port in dropped.
        #expect(output.contains("enforcing ruleset version 1"))
        #expect(output.contains("https out (a candidate the proposal left commented out): refused (TCP reset)"))
        #expect(output.contains("tcp/2222 in (never approved): no answer (dropped)"))
        #expect(output.contains("https out: connected again"))
        // Isolated: only the collector; the guard undoes a flush; released; the log verifies.
        #expect(output.contains("ssh port from the peer: no answer (dropped)"))
        #expect(output.contains("the collector 192.0.2.20:9000: connected"))
        #expect(output.contains("tables back after") && output.contains("s: true"))
        #expect(output.contains("released: the host is back in its previous mode"))
        #expect(output.contains("decision log intact"))
        #expect(output.contains("the zone moves api.snapcraft.io to 203.0.113.12: connected"))
        #expect(output.contains("elsewhere.example (not in the ruleset): refused"))
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
            .filter { $0.hasPrefix("\(Lab.namePrefix)\(demo.pid)x") }
        #expect(leftovers.isEmpty, "namespaces left: \(leftovers)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let flows = try lab.flows(cordon, database: database)
        #expect(flows.contains { $0.direction == "inbound" && $0.localPort == 22 && $0.connections >= 4 })
        #expect(flows.contains { $0.direction == "forward" })
    }

    /// Direction follows the host's addresses as they change: an address added while the agent
    /// runs is recognised as the host's at once.
    @Test func anAddressAddedWhileRunningIsTheHosts() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
        let database = scenario.database
        let agent = try scenario.startAgent(binary: cordon)
        try lab.run(scenario.host, ["ip", "addr", "add", "192.0.2.11/24", "dev", try lab.interface(in: scenario.host, holding: S.hostV4)])
        usleep(200_000)
        try scenario.tcp(from: scenario.peer, to: "192.0.2.11", port: 22)
        #expect(lab.stop(agent) == 0)
        let flows = try lab.flows(cordon, database: database, filters: ["--port", "22"])
        #expect(flows.count == 1)
        #expect(flows.first?.direction == "inbound")
        #expect(flows.first?.local == "192.0.2.11")
    }

    /// Lost events are noticed and repaired: with the agent stopped (SIGSTOP) and a 1 MiB buffer,
    /// a burst of new connections overruns its socket; when it runs again it must report the
    /// overrun, re-read the table, and end with every one of those connections counted once.
    @Test func anOverrunIsRepairedByReReadingTheTable() throws {
        let cordon = try Integration.cordon()
        let bench = URL(fileURLWithPath: cordon).deletingLastPathComponent().appendingPathComponent("cordon-bench").path
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
        let config = lab.directory + "/cordon.yaml"
        try "receive_buffer_mib: 1\nflush_interval: 0.2\n".write(toFile: config, atomically: true, encoding: .utf8)
        let database = scenario.database, socket = scenario.socket
        let agent = try scenario.startAgent(binary: cordon, extra: ["--config", config])
        agent.signal(SIGSTOP)
        // 20,000 entries that stay alive for two minutes, made faster than any reader (ctnetlink).
        let burst = try lab.run(scenario.host, [bench, "inject", "--destination", S.hostV4, "--rate", "100000",
                                                "--duration", "0.2", "--timeout", "120"], timeout: 30)
        agent.signal(SIGCONT)
        #expect(burst.succeeded, "\(burst.stderr)")
        let made = Int(burst.stdout.split(separator: " ").dropFirst().first ?? "") ?? 0
        #expect(made == 19_968)

        var status: [String: Any] = [:]
        for _ in 0..<200 {
            let text = try lab.run(nil, [cordon, "status", "--json", "--socket", socket]).stdout
            status = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
            if (status["resyncs"] as? Int ?? 0) >= 1 { break }
            usleep(50_000)
        }
        #expect((status["lost_events"] as? Int ?? 0) >= 1, "the overrun must be reported: \(status)")
        #expect((status["resyncs"] as? Int ?? 0) >= 1)
        #expect((status["recovered_connections"] as? Int ?? 0) >= 1)
        #expect(lab.stop(agent) == 0)
        let flows = try lab.flows(cordon, database: database, filters: ["--port", "5001"])
        #expect(flows.reduce(0) { $0 + $1.connections } == made, "every connection counted once")
    }

    /// Review against a real record: a ruleset without SSH is a lockout risk (exit 3); the
    /// proposal from the same record allows the SSH that was used.
    @Test func reviewFlagsCuttingSSHAndTheProposalDoesNot() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
        let database = scenario.database
        let agent = try scenario.startAgent(binary: cordon)
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        try scenario.udp(from: scenario.host, to: S.peerV4, port: 53)
        #expect(lab.stop(agent) == 0)

        let noSSH = lab.directory + "/no-ssh.yaml"
        try "networks:\n  - name: dns\n    entries: [\(S.peerV4)]\n    services: [udp/53]\noutgoing:\n  - to: dns\n"
            .write(toFile: noSSH, atomically: true, encoding: .utf8)
        let risky = try lab.run(nil, [cordon, "review", noSSH, "--db", database, "--json"])
        #expect(risky.status == 3)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(risky.stdout.utf8)) as? [String: Any])
        let kinds = (report["risks"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
        #expect(kinds.contains("ssh"))
        #expect((report["rejected"] as? [[String: Any]])?.count == 1)
        #expect((report["allowed"] as? [[String: Any]])?.first?["rule"] as? String == "outgoing:dns")

        let proposal = lab.directory + "/proposed.yaml"
        #expect(try lab.run(nil, [cordon, "propose", "--db", database, "--out", proposal]).succeeded)
        let reviewed = try lab.run(nil, [cordon, "review", proposal, "--db", database, "--json"])
        let proposed = try #require(try JSONSerialization.jsonObject(with: Data(reviewed.stdout.utf8)) as? [String: Any])
        // The machine's own resolvers may not be the lab's peer, so only SSH is asserted here.
        #expect(!((proposed["risks"] as? [[String: Any]] ?? []).contains { $0["kind"] as? String == "ssh" }))
        #expect((proposed["rejected"] as? [[String: Any]])?.isEmpty == true)
    }

    /// Review and approve weigh the resolvers the agent was given (`--resolver`), not the
    /// nameserver of /etc/resolv.conf, which the agent does not allow then (issue 19, item 13).
    @Test func reviewWeighsTheAgentsResolvers() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
        try lab.setResolvers(scenario.host, ["198.51.100.53"])
        let database = scenario.database
        let agent = try scenario.startAgent(binary: cordon, extra: ["--resolver", S.peerV4])
        let file = lab.directory + "/https.yaml"
        try "networks:\n  - name: https\n    entries: [\(S.peerV4)]\n    services: [tcp/443]\noutgoing:\n  - to: https\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let review = try lab.run(scenario.host, [cordon, "review", file, "--db", database])
        #expect(review.status == 0, "\(review.stdout)\(review.stderr)")
        #expect(!review.stdout.contains("198.51.100.53"), "\(review.stdout)")
        let approve = try lab.run(scenario.host, [cordon, "approve", file, "--operator", "alice", "--db", database])
        #expect(approve.succeeded, "\(approve.stdout)\(approve.stderr)")
        #expect(lab.stop(agent) == 0)
    }

    /// Approval: refused on a lockout risk (and logged), stored with --accept-risk, and the
    /// proposal of a real run approved cleanly when reviewed where the host's resolver is the peer.
    @Test func approveRefusesRisksAndStoresVersions() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false)
        try lab.setResolvers(scenario.host, [S.peerV4])
        let database = scenario.database, socket = scenario.socket
        let agent = try scenario.startAgent(binary: cordon)
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        try scenario.udp(from: scenario.host, to: S.peerV4, port: 53)
        try Integration.waitUntil("both flows are on disk") {
            let flows = try lab.flows(cordon, database: database)
            return flows.contains { $0.localPort == 22 } && flows.contains { $0.remotePort == 53 }
        }

        let noSSH = lab.directory + "/no-ssh.yaml"
        try "networks:\n  - name: dns\n    entries: [\(S.peerV4)]\n    services: [udp/53]\noutgoing:\n  - to: dns\n"
            .write(toFile: noSSH, atomically: true, encoding: .utf8)
        let refused = try lab.run(scenario.host, [cordon, "approve", noSSH, "--operator", "alice", "--db", database])
        #expect(refused.status == 3)
        #expect(refused.stderr.contains("ssh:"), "\(refused.stderr)")
        let none = try lab.run(nil, [cordon, "rulesets", "--json", "--db", database])
        #expect((try JSONSerialization.jsonObject(with: Data(none.stdout.utf8)) as? [Any])?.isEmpty == true, "a refusal stores nothing")

        let accepted = try lab.run(scenario.host, [cordon, "approve", noSSH, "--operator", "alice", "--accept-risk", "--db", database])
        #expect(accepted.succeeded, "\(accepted.stderr)")
        #expect(accepted.stdout.contains("version 1"))

        let proposal = lab.directory + "/proposed.yaml"
        #expect(try lab.run(nil, [cordon, "propose", "--db", database, "--out", proposal]).succeeded)
        let approved = try lab.run(scenario.host, [cordon, "approve", proposal, "--operator", "bob", "--db", database])
        #expect(approved.succeeded, "the proposal of the run must approve without risk: \(approved.stderr)")

        let versions = try #require(try JSONSerialization.jsonObject(with: Data(
            try lab.run(nil, [cordon, "rulesets", "--json", "--db", database]).stdout.utf8)) as? [[String: Any]])
        #expect(versions.map { $0["version"] as? Int } == [1, 2])
        #expect(versions.map { $0["operator"] as? String } == ["alice", "bob"])
        #expect(versions.first?["accepted_risks"] as? [String] == ["ssh"])
        #expect(versions.last?["content"] as? String == (try String(contentsOfFile: proposal, encoding: .utf8)))

        let status = try #require(try JSONSerialization.jsonObject(with: Data(
            try lab.run(nil, [cordon, "status", "--json", "--socket", socket]).stdout.utf8)) as? [String: Any])
        #expect((status["approved"] as? [String: Any])?["version"] as? Int == 2)
        #expect(status["ruleset"] is NSNull, "approved, not enforced: discovery has no ruleset in force")
        #expect(lab.stop(agent) == 0)
    }

    /// `review --interactive` at a real terminal (a pty from script(1)): the analyst allows one
    /// group narrowed and one from anywhere; the written ruleset then rejects nothing recorded.
    @Test func interactiveReviewWritesTheDecisions() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab)
        let dir = lab.directory, database = scenario.database
        let agent = try scenario.startAgent(binary: cordon)
        _ = try scenario.driveTraffic(rounds: 1)
        #expect(lab.stop(agent) == 0)
        let proposal = dir + "/proposed.yaml", reviewed = dir + "/reviewed.yaml"
        #expect(try lab.run(nil, [cordon, "propose", "--db", database, "--out", proposal]).succeeded)

        let command = "\(cordon) review \(proposal) --interactive --db \(database) --out \(reviewed)"
        let session = try lab.run(nil, ["script", "-qec", command, "/dev/null"], timeout: 60, input: "n\na\n")
        #expect(session.succeeded, "\(session.stdout)\(session.stderr)")
        #expect(session.stdout.contains("[1/2] inbound udp/514"))
        #expect(session.stdout.contains("[2/2] outbound tcp/443"))
        let text = try String(contentsOfFile: reviewed, encoding: .utf8)
        #expect(text.contains("- name: in-syslog-udp-514\n"))
        #expect(text.contains("entries: [\(S.peerV4)]"))
        #expect(text.contains("- name: out-https-tcp-443\n"))
        let check = try lab.run(nil, [cordon, "review", reviewed, "--db", database, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(check.stdout.utf8)) as? [String: Any])
        #expect((report["rejected"] as? [Any])?.isEmpty == true, "\(check.stdout)")

        // Without a terminal it refuses rather than guess.
        let piped = try lab.run(nil, [cordon, "review", proposal, "--interactive", "--db", database], input: "n\n")
        #expect(piped.status == 2)
        #expect(piped.stderr.contains("needs a terminal"))
    }
}
