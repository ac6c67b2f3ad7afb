import ArgumentParser
import CordonLab
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show the lifecycle end to end in throwaway network namespaces (needs root).",
        discussion: """
            Creates namespaces joined by veth pairs, runs the agent in one of them, drives real \
            traffic (socat, ping) from peers in both directions, prints what discovery recorded, \
            proposes, reviews and approves a ruleset, enforces it (allowed traffic works, the rest is \
            refused), confirms, returns to discovery, isolates the host (only the management channel \
            passes), shows the guard undoing `nft flush ruleset`, releases, and prints the actions and \
            the verified decision log. Nothing outside those namespaces is touched; they are deleted at \
            the end, also on failure or Ctrl-C.
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard geteuid() == 0 else { throw CLIError.failed("the demo creates network namespaces: run it as root") }
        let lab: Lab
        do { lab = try Lab() } catch { throw CLIError.failed("\(error)") }
        // Ctrl-C or SIGTERM: remove the namespaces before going.
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let terminate = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        for source in [interrupt, terminate] {
            source.setEventHandler { lab.cleanup(); Glibc.exit(130) }
            source.resume()
        }
        defer { lab.cleanup() }
        do {
            try demo(lab)
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError.failed("demo: \(error)")
        }
    }

    private func step(_ text: String) { say("\n== \(text)") }

    /// Unbuffered, so progress shows as it happens also when the output is piped.
    private func say(_ text: String, terminator: String = "\n") {
        FileHandle.standardOutput.write(Data((text + terminator).utf8))
    }

    private func demo(_ lab: Lab) throws {
        let cordon = try DiscoveryScenario.cordonBinary()
        step("Building throwaway namespaces: host (the agent's), peer, and far (routed through host)")
        let scenario = try DiscoveryScenario(lab: lab)
        say("   host \(DiscoveryScenario.hostV4) / \(DiscoveryScenario.hostV6)  <->  peer \(DiscoveryScenario.peerV4) / \(DiscoveryScenario.peerV6)")
        say("   host \(DiscoveryScenario.routerV4)  <->  far \(DiscoveryScenario.farV4)")

        step("Opening sessions that predate the agent (an SSH-like session in, HTTPS out)")
        try scenario.openLongLivedSessions()

        // Given --db, the demo's record outlives the demo (`cordon flows --db PATH` afterwards).
        let database = global.db ?? scenario.database, socket = global.socket ?? scenario.socket
        step("Starting `cordon agent` in the host namespace (discovery: records, blocks nothing)")
        let agent = try scenario.startAgent(binary: cordon, database: database, socket: socket)

        step("Driving traffic: TCP, UDP and ICMP in both directions, forwarded TCP, and loopback")
        let traffic = try scenario.driveTraffic()
        say("   \(traffic.inboundTCP22) × ssh in, \(traffic.inboundUDP514) × syslog in, \(traffic.outboundTCP443 + traffic.outboundTCP443v6) × https out, \(traffic.outboundUDP53) × dns out, \(traffic.forwardTCP8080) × web forwarded, pings both ways")

        usleep(1_200_000)
        step("cordon status")
        say(try lab.run(nil, [cordon, "status", "--socket", socket]).stdout, terminator: "")

        step("Stopping the agent (SIGTERM: flush, remove its table, exit 0)")
        let status = lab.stop(agent)
        say("   agent exited with \(status.map(String.init) ?? "no exit within 10 s")")

        step("cordon flows — what discovery recorded (the pre-existing sessions included, loopback not)")
        let flows = try lab.run(nil, [cordon, "flows", "--db", database])
        say(flows.stdout, terminator: "")
        guard flows.succeeded else { throw CLIError.failed(flows.stderr) }

        step("cordon propose — a ruleset from what was recorded (standard networks, then Somewhere candidates)")
        let proposalFile = lab.directory + "/proposed.yaml"
        let proposal = try lab.run(nil, [cordon, "propose", "--db", database, "--out", proposalFile])
        guard proposal.succeeded else { throw CLIError.failed("propose failed: \(proposal.stderr)") }
        say((try? String(contentsOfFile: proposalFile, encoding: .utf8)) ?? "", terminator: "")

        // Review and approve run in the host's namespace, where its resolver is the peer.
        try lab.setResolvers(scenario.host, [DiscoveryScenario.peerV4])
        step("cordon review — what enforcing the proposal would reject, and lockout risks")
        let review = try lab.run(scenario.host, [cordon, "review", proposalFile, "--db", database])
        say(review.stdout + review.stderr, terminator: "")

        step("cordon approve — without SSH the approval is refused (a lockout risk) ...")
        let noSSH = lab.directory + "/no-ssh.yaml"
        try (try String(contentsOfFile: proposalFile, encoding: .utf8)).replacingOccurrences(of: "  - from: ssh\n", with: "")
            .write(toFile: noSSH, atomically: true, encoding: .utf8)
        let refused = try lab.run(scenario.host, [cordon, "approve", noSSH, "--operator", "demo", "--db", database])
        say(refused.stderr + "   (exit \(refused.status))")
        step("... and the proposal itself is approved and stored as a version")
        let approved = try lab.run(scenario.host, [cordon, "approve", proposalFile, "--operator", "demo", "--db", database])
        say(approved.stdout + approved.stderr, terminator: "")
        say(try lab.run(nil, [cordon, "rulesets", "--db", database]).stdout, terminator: "")

        try enforce(lab, scenario: scenario, cordon: cordon, database: database, socket: socket)
        try names(lab, cordon: cordon)
        try fleet(lab)

        step("Done. Namespaces and files are being removed.")
        say("   Next: `cordon flows --json` for machine-readable output; Docs/rulesets.md for the ruleset format;")
        say("   Docs/operations.md for enforcing on a real host (collectors, the confirm window, recovery);")
        say("   Docs/fleet.md and Docs/openapi.json for cordon-server.")
    }

    /// Names: a service whose addresses move, allowed by its name; everything else refused.
    private func names(_ lab: Lab, cordon: String) throws {
        step("Names: a host that reaches api.snapcraft.io over HTTPS, resolved by a real resolver (dnsmasq) whose zone we control")
        let zone = ["203.0.113.10 api.snapcraft.io", "203.0.113.60 elsewhere.example"]
        let names = try NameScenario(lab: lab, zone: zone, prefix: "dns-")
        say("   dns-host \(NameScenario.hostV4)  <->  dns-net: resolver \(NameScenario.resolverV4), servers on 203.0.113.0/24")
        let agent = try names.startAgent(binary: cordon)
        func run(_ arguments: [String]) throws -> CommandResult {
            try lab.run(names.host, [cordon] + arguments + ["--db", names.database, "--socket", names.socket], timeout: 60)
        }
        func connect(_ name: String) throws -> String { try names.connect(name) ? "connected" : "refused" }
        say("   discovery: api.snapcraft.io \(try connect("api.snapcraft.io")), elsewhere.example \(try connect("elsewhere.example"))")
        usleep(800_000)
        step("cordon flows --port 443 — the flows carry the names they were looked up by (NAME)")
        say(try run(["flows", "--port", "443"]).stdout, terminator: "")
        step("cordon names — what the resolver's answers taught")
        say(try run(["names"]).stdout, terminator: "")
        step("Approving a ruleset that allows api.snapcraft.io by name (and nothing else on 443), then enforcing it")
        let file = lab.directory + "/dns-by-name.yaml"
        let ruleset = "networks:\n  - name: snap-store\n    entries: [api.snapcraft.io]\n    services: [tcp/443]\noutgoing:\n  - to: snap-store\n"
        try ruleset.write(toFile: file, atomically: true, encoding: .utf8)
        say(ruleset, terminator: "")
        let approved = try lab.run(names.host, [cordon, "approve", file, "--operator", "demo", "--accept-risk", "--db", names.database])
        say(approved.stdout + approved.stderr, terminator: "")
        let enforced = try run(["enforce", "--operator", "demo"])
        say(enforced.stdout + enforced.stderr, terminator: "")
        _ = try run(["confirm", "--operator", "demo"])
        for address in ["203.0.113.11", "203.0.113.12"] {
            try names.setZone(zone.filter { !$0.hasSuffix("api.snapcraft.io") } + ["\(address) api.snapcraft.io"])
            say("   the zone moves api.snapcraft.io to \(address): \(try connect("api.snapcraft.io")) (its answer was held until the address was allowed)")
        }
        say("   elsewhere.example (not in the ruleset): \(try connect("elsewhere.example"))")
        say("   203.0.113.99 (no name gave it): \(try connect("203.0.113.99"))")
        lab.stop(agent)
    }

    /// The fleet: cordon-server with a throwaway PostgreSQL, two agents, one isolated remotely and released.
    private func fleet(_ lab: Lab) throws {
        typealias F = FleetScenario
        step("The fleet: cordon-server (HTTPS, PostgreSQL in a throwaway cluster) on a server namespace, agents on hosts a, b and c")
        let fleet = try FleetScenario(lab: lab)
        _ = try fleet.startServer()
        say("   cordon-server init: CA \(fleet.caFile), server certificate for \(F.serverA) and \(F.serverB), admin token printed once")
        let secret = try fleet.enrollSecret(tags: "tier=web")
        _ = try fleet.startAgent(fleet.a, secretFile: secret, hostname: "web-a")
        _ = try fleet.startAgent(fleet.b, secretFile: secret, hostname: "web-b")
        _ = try fleet.startAgent(fleet.c, secretFile: secret, hostname: "web-c")
        let analyst = try fleet.token(role: "responder", name: "analyst")
        var listed = ""
        for _ in 0..<100 {
            listed = try fleet.fleet(["hosts"], token: analyst).stdout
            if listed.components(separatedBy: " yes ").count > 3 { break }
            usleep(100_000)
        }
        step("cordon fleet hosts — the agents enrolled with the secret and connected")
        say(listed, terminator: "")
        let web = { () throws -> String in
            try lab.run(fleet.a, ["socat", "-u", "/dev/null", "TCP:\(F.web):443,connect-timeout=1"], timeout: 10).succeeded ? "connected" : "no answer (dropped)"
        }
        say("   host a to the web service \(F.web):443: \(try web())")
        let hostA = try lab.run(fleet.a, ["hostname"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let list = try fleet.fleet(["hosts", "--json"], token: analyst)
        let hosts = (try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]) ?? []
        // Both namespaces share the machine's host name: pick host a by its address.
        guard let id = hosts.first(where: { ($0["addresses"] as? [String])?.contains(F.hostA) == true })?["id"] as? String else {
            throw CLIError.failed("host a did not enroll (\(hostA)): \(list.stdout)\(list.stderr)")
        }
        step("cordon fleet isolate — one API call; the agent applies it and the server has the decision at once")
        let started = Date()
        let isolated = try fleet.fleet(["isolate", id, "--reason", "demo: EDR alert"], token: analyst)
        say(isolated.stdout + isolated.stderr, terminator: "")
        say("   confirmed \(String(format: "%.0f", Date().timeIntervalSince(started) * 1000)) ms after the command started")
        say("   host a to the web service: \(try web()); the server and DNS stay reachable (the management channel)")
        say(try fleet.fleet(["show", id], token: analyst).stdout, terminator: "")
        step("cordon fleet release — the agent checks it still reaches the server through its rules before it stays released")
        let released = try fleet.fleet(["release", id, "--reason", "demo: false positive"], token: analyst)
        say(released.stdout + released.stderr, terminator: "")
        say("   host a to the web service: \(try web())")
        step("cordon fleet intents, and the shipped decision log, verified by the server")
        say(try fleet.fleet(["intents"], token: analyst).stdout, terminator: "")
        let log = try fleet.fleet(["log", id, "--verify"], token: analyst)
        say(log.stdout + log.stderr, terminator: "")
        try fleetPolicy(lab, fleet, web: web)
    }

    /// One ruleset for the tier, reviewed per host, approved once, and rolled out in waves.
    private func fleetPolicy(_ lab: Lab, _ fleet: FleetScenario, web: () throws -> String) throws {
        typealias F = FleetScenario
        let approver = try fleet.token(role: "approver", name: "apollo")
        let file = lab.directory + "/web.yaml"
        try """
            name: web
            appliesTo: 'tier == "web"'
            networks:
              - name: resolver
                entries: [\(F.serverA), \(F.serverB)]
                services: [udp/53, tcp/53]
              - name: web
                entries: [\(F.web)]
                services: [tcp/443]
            outgoing:
              - to: resolver
              - to: web

            """.write(toFile: file, atomically: false, encoding: .utf8)
        step("cordon fleet review — the tier's ruleset against each host's own uploaded record, before anything changes")
        let review = try fleet.fleet(["review", file], token: approver)
        say(review.stdout + review.stderr, terminator: "")
        step("cordon fleet approve and assign — one immutable version, bound to the tier by a selector; nothing changes on a host yet")
        say(try fleet.fleet(["approve", file, "--name", "web"], token: approver).stdout, terminator: "")
        say(try fleet.fleet(["assign", "web", "--selector", #"tier == "web""#], token: approver).stdout, terminator: "")
        step("cordon fleet rollout start — default-reject in waves (1 host, then the rest); each host confirms by itself after a round trip to the server")
        let started = try fleet.fleet(["rollout", "start", "--selector", #"tier == "web""#, "--waves", "1,100%", "--soak", "3s",
                                       "--confirm-window", "30s", "--json"], token: approver)
        guard started.succeeded, let object = try JSONSerialization.jsonObject(with: Data(started.stdout.utf8)) as? [String: Any],
              let id = object["id"] as? String else { throw CLIError.failed("rollout start: \(started.stdout)\(started.stderr)") }
        let began = Date()
        var status = ""
        for _ in 0..<240 {
            status = try fleet.fleet(["rollout", "status", id], token: approver).stdout
            if !status.contains(": running,") { break }
            usleep(250_000)
        }
        say(status, terminator: "")
        say("   \(String(format: "%.1f", Date().timeIntervalSince(began))) s from start to the last host confirmed, with a 3 s soak between the waves")
        say("   host a to the web service, now allowed by the tier's policy: \(try web())")
        step("cordon fleet hosts — every host in sync with the tier's policy")
        say(try fleet.fleet(["hosts"], token: approver).stdout, terminator: "")
    }

    private func enforce(_ lab: Lab, scenario: DiscoveryScenario, cordon: String, database: String, socket: String) throws {
        typealias S = DiscoveryScenario
        step("Starting the agent again, with a collector on the peer (\(S.peerV4):9000) as its management channel")
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:9000,fork,reuseaddr", "SYSTEM:true"])
        let agent = try scenario.startAgent(binary: cordon, database: database, socket: socket,
                                            extra: ["--collector", "\(S.peerV4):9000"])

        step("cordon render — the nftables table enforce will commit (loads with `nft -f` to exactly the same)")
        say(try lab.run(nil, [cordon, "render", "--db", database]).stdout, terminator: "")

        step("cordon enforce — one atomic transaction, then a TCP check of the collector through the new rules")
        let enforced = try lab.run(scenario.host, [cordon, "enforce", "--operator", "demo", "--confirm-within", "120",
                                                   "--db", database, "--socket", socket], timeout: 60)
        say(enforced.stdout + enforced.stderr, terminator: "")
        guard enforced.succeeded else { throw CLIError.failed("enforce failed") }

        step("While enforcing: what the ruleset allows still works ...")
        try scenario.tcp(from: scenario.peer, to: S.hostV4, port: 22)
        say("   ssh port from the peer: connected")
        try scenario.ping(from: scenario.peer, to: S.hostV4)
        say("   ping from the peer: answered")
        step("... and what it does not is refused: at once going out, silently coming in")
        for (from, to, port, what) in [(scenario.host, S.peerV4, 443, "https out (a candidate the proposal left commented out)"),
                                       (scenario.peer, S.hostV4, 2222, "tcp/2222 in (never approved)")] {
            let started = Date()
            let result = try lab.run(from, ["socat", "-u", "/dev/null", "TCP:\(to):\(port),connect-timeout=2"], timeout: 10)
            let reason = result.succeeded ? "connected?!" : (result.stderr.contains("refused") ? "refused (TCP reset)" : "no answer (dropped)")
            say("   \(what): \(reason) after \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
        usleep(1_200_000)
        step("cordon flows --verdict rejected — the red flows")
        say(try lab.run(nil, [cordon, "flows", "--verdict", "rejected", "--db", database]).stdout, terminator: "")

        step("cordon status — enforcing, and when it rolls back unless confirmed")
        say(try lab.run(nil, [cordon, "status", "--socket", socket]).stdout, terminator: "")
        step("cordon confirm — keep the rules (they now outlive the agent)")
        say(try lab.run(scenario.host, [cordon, "confirm", "--operator", "demo", "--socket", socket]).stdout, terminator: "")
        step("cordon discover — and back to discovery in one transaction")
        say(try lab.run(scenario.host, [cordon, "discover", "--operator", "demo", "--socket", socket]).stdout, terminator: "")
        try scenario.tcp(from: scenario.host, to: S.peerV4, port: 443)
        say("   https out: connected again")

        try isolate(lab, scenario: scenario, cordon: cordon, database: database, socket: socket)
        lab.stop(agent)
    }

    private func isolate(_ lab: Lab, scenario: DiscoveryScenario, cordon: String, database: String, socket: String) throws {
        typealias S = DiscoveryScenario
        func probe(_ from: String, _ to: String, _ port: Int) throws -> String {
            let result = try lab.run(from, ["socat", "-u", "/dev/null", "TCP:\(to):\(port),connect-timeout=1"], timeout: 10)
            return result.succeeded ? "connected" : (result.stderr.contains("refused") ? "refused" : "no answer (dropped)")
        }
        step("cordon isolate — emergency: only the management channel passes, established sessions included")
        let isolated = try lab.run(scenario.host, [cordon, "isolate", "--operator", "demo", "--reason", "demo: suspected compromise",
                                                   "--db", database, "--socket", socket])
        say(isolated.stdout + isolated.stderr, terminator: "")
        say("   ssh port from the peer: \(try probe(scenario.peer, S.hostV4, 22))")
        say("   https out: \(try probe(scenario.host, S.peerV4, 443))")
        say("   the collector \(S.peerV4):9000: \(try probe(scenario.host, S.peerV4, 9000))")

        step("nft flush ruleset inside the host (another tool's reload): the guard puts Cordon's tables back")
        let flushed = Date()
        _ = try lab.run(scenario.host, ["nft", "flush", "ruleset"])
        var back = false
        while !back && Date().timeIntervalSince(flushed) < 5 {
            usleep(20_000)
            let tables = try lab.run(scenario.host, ["nft", "list", "tables"]).stdout
            back = tables.contains("cordon_isolate") && tables.contains("table inet cordon\n")
        }
        say("   tables back after \(String(format: "%.2f", Date().timeIntervalSince(flushed))) s: \(back)")

        step("cordon release — back to the previous mode, after checking the collector")
        say(try lab.run(scenario.host, [cordon, "release", "--operator", "demo", "--db", database, "--socket", socket]).stdout, terminator: "")
        say("   https out: \(try probe(scenario.host, S.peerV4, 443))")

        step("cordon actions, and cordon log --verify — who did what, and proof the log is intact")
        say(try lab.run(nil, [cordon, "actions", "--db", database]).stdout, terminator: "")
        let verified = try lab.run(nil, [cordon, "log", "--verify", "--db", database])
        say(verified.stdout + verified.stderr, terminator: "")
        say(try lab.run(nil, [cordon, "log", "--db", database]).stdout, terminator: "")
    }
}
