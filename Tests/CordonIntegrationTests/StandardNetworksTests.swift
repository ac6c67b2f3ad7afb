import CordonLab
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The seven standard networks from real peers: sshd, dnsmasq (DNS and DHCP) with dhclient on the
/// host, chrony, a listener on 389, a web server on 169.254.169.254:80, ping, and one unusual
/// port. Discovery records them; `propose` must cover exactly the seven; `review` must find no
/// lockout risk in the proposal; `approve` must store it; once enforced, the same real clients
/// must still work, and nothing else.
@Suite(.serialized, .enabled(if: Integration.shouldRun && Peers.installed, Peers.skipNote))
struct StandardNetworksTests {
    typealias S = DiscoveryScenario

    @Test func aRealWeekInMinutesProposesTheSevenStandardNetworks() throws {
        let cordon = try Integration.cordon()
        let lab = try Lab()
        defer { lab.cleanup() }
        let scenario = try DiscoveryScenario(lab: lab, hostFirewall: false, servers: false)
        let dir = lab.directory
        let chronyd = try #require(Lab.which("chronyd"), "chronyd: bash .ci/setup --tests")
        let sshd = try #require(Lab.which("sshd"), "sshd: bash .ci/setup --tests")
        try lab.setResolvers(scenario.host, [S.peerV4])
        let peerLink = try lab.interface(in: scenario.peer, holding: S.peerV4)
        let hostLink = try lab.interface(in: scenario.host, holding: S.hostV4)

        // Peer: DNS + DHCP (dnsmasq), NTP (chronyd serving its own clock), LDAP port, metadata.
        _ = try lab.spawn(scenario.peer, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                          "--bind-interfaces", "--listen-address=\(S.peerV4)", "--address=/cordon.test/\(S.peerV4)",
                                          "--dhcp-range=192.0.2.100,192.0.2.150,1h", "--dhcp-leasefile=\(dir)/leases",
                                          "--pid-file=\(dir)/dnsmasq.pid", "--user=root"], log: dir + "/dnsmasq.log")
        try "allow 192.0.2.0/24\nlocal stratum 8\nbindaddress \(S.peerV4)\ncmdport 0\npidfile \(dir)/chronyd-server.pid\n"
            .write(toFile: dir + "/chrony-server.conf", atomically: true, encoding: .utf8)
        // -x: never touch the machine's clock (it is not namespaced).
        _ = try lab.spawn(scenario.peer, [chronyd, "-d", "-x", "-u", "root", "-f", dir + "/chrony-server.conf"], log: dir + "/chronyd.log")
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:389,fork,reuseaddr", "PIPE"])
        try lab.run(scenario.peer, ["ip", "addr", "add", "169.254.169.254/32", "dev", peerLink])
        try lab.run(scenario.host, ["ip", "route", "add", "169.254.169.254/32", "dev", hostLink])
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:80,bind=169.254.169.254,fork,reuseaddr",
                                          "SYSTEM:echo meta-data"])
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:4711,fork,reuseaddr", "PIPE"])

        // Host: sshd with its own key and config.
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        try lab.run(nil, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/host_key"])
        try lab.run(nil, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/client_key"])
        try FileManager.default.copyItem(atPath: dir + "/client_key.pub", toPath: dir + "/authorized_keys")
        try """
            ListenAddress \(S.hostV4)
            HostKey \(dir)/host_key
            PidFile \(dir)/sshd.pid
            AuthorizedKeysFile \(dir)/authorized_keys
            StrictModes no
            UsePAM no
            PermitRootLogin prohibit-password
            """.write(toFile: dir + "/sshd_config", atomically: true, encoding: .utf8)
        _ = try lab.spawn(scenario.host, [sshd, "-D", "-e", "-f", dir + "/sshd_config"], log: dir + "/sshd.log")
        // sshd writes its PidFile once it listens.
        try Integration.waitUntil("sshd listens") { FileManager.default.fileExists(atPath: dir + "/sshd.pid") }

        let database = scenario.database, socket = scenario.socket
        let agent = try scenario.startAgent(binary: cordon)

        // SSH in, from the peer.
        let ssh = try lab.run(scenario.peer, ["ssh", "-i", dir + "/client_key", "-o", "StrictHostKeyChecking=no", "-o",
                                               "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@\(S.hostV4)", "true"],
                              timeout: 30)
        #expect(ssh.succeeded, "ssh: \(ssh.stderr)\n\((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? "")")
        // DHCP: one lease, configured by a script that changes nothing.
        try "#!/bin/sh\nexit 0\n".write(toFile: dir + "/dhclient-script", atomically: true, encoding: .utf8)
        chmod(dir + "/dhclient-script", 0o755)
        let dhcp = try lab.run(scenario.host, ["dhclient", "-1", "-v", "-sf", dir + "/dhclient-script", "-lf", dir + "/dhclient.leases",
                                                "-pf", dir + "/dhclient.pid", hostLink], timeout: 40)
        #expect(dhcp.succeeded, "dhclient: \(dhcp.stderr)")
        if let pid = Int32(((try? String(contentsOfFile: dir + "/dhclient.pid", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGKILL)
        }
        // DNS through the resolver of the host's resolv.conf.
        let dns = try lab.run(scenario.host, ["getent", "ahostsv4", "cordon.test"], timeout: 20)
        #expect(dns.stdout.contains(S.peerV4), "dns: \(dns.stdout) \(dns.stderr)")
        // NTP: ask the peer for the time without setting the clock.
        try "server \(S.peerV4) iburst\ncmdport 0\npidfile \(dir)/chronyd-client.pid\n"
            .write(toFile: dir + "/chrony-client.conf", atomically: true, encoding: .utf8)
        let ntp = try lab.run(scenario.host, [chronyd, "-Q", "-t", "20", "-u", "root", "-f", dir + "/chrony-client.conf"], timeout: 40)
        #expect(ntp.succeeded, "ntp: \(ntp.stdout) \(ntp.stderr)")
        try scenario.tcp(from: scenario.host, to: S.peerV4, port: 389)
        let metadata = try lab.run(scenario.host, ["socat", "-t5", "-T5", "-", "TCP:169.254.169.254:80"], input: "GET / HTTP/1.0\r\n\r\n")
        #expect(metadata.stdout.contains("meta"), "metadata: \(metadata.stderr)")
        try scenario.ping(from: scenario.host, to: S.peerV4)
        try scenario.ping(from: scenario.peer, to: S.hostV4)
        try scenario.tcp(from: scenario.host, to: S.peerV4, port: 4711)
        usleep(700_000)
        #expect(lab.stop(agent) == 0)

        let proposal = dir + "/proposed.yaml"
        let proposed = try lab.run(nil, [cordon, "propose", "--db", database, "--out", proposal])
        #expect(proposed.succeeded, "\(proposed.stderr)")
        let text = try String(contentsOfFile: proposal, encoding: .utf8)
        let names = text.split(separator: "\n").filter { $0.hasPrefix("  - name: ") }.map { String($0.dropFirst(10)) }
        let recorded = try lab.run(nil, [cordon, "flows", "--db", database]).stdout
        #expect(names == ["ssh", "ntp", "dns", "dhcp", "ldap", "icmp", "metadata"], "flows:\n\(recorded)\n\(text)")
        // A commented-out outbound candidate, whatever IANA name /etc/services gives the port.
        #expect(text.split(separator: "\n").contains { $0.hasPrefix("  # - name: out-") && $0.hasSuffix("tcp-4711") },
                "the unusual port is a candidate")
        #expect(text.split(separator: "\n").contains { $0.hasPrefix("  # - to: out-") && $0.hasSuffix("tcp-4711") })

        // Reviewed where its resolver, DHCP and SSH facts are the host's own.
        let review = try lab.run(scenario.host, [cordon, "review", proposal, "--db", database])
        #expect(review.status == 0, "\(review.stdout)\(review.stderr)")
        let approve = try lab.run(scenario.host, [cordon, "approve", proposal, "--operator", "analyst", "--db", database])
        #expect(approve.succeeded, "\(approve.stderr)")

        // Enforce the approved proposal, with a collector on the peer, while an SSH session is open.
        _ = try lab.spawn(scenario.peer, ["socat", "TCP-LISTEN:9000,fork,reuseaddr", "SYSTEM:true"])
        _ = try lab.spawn(scenario.host, ["socat", "TCP-LISTEN:5555,fork,reuseaddr", "PIPE"])
        let enforcing = try scenario.startAgent(binary: cordon, extra: ["--collector", "\(S.peerV4):9000"])
        let sshBase = ["ssh", "-i", dir + "/client_key", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                       "-o", "BatchMode=yes", "root@\(S.hostV4)"]
        let session = try lab.spawn(scenario.peer, sshBase + ["echo session-open; sleep 4; echo session-survived"], log: dir + "/session.log")
        for _ in 0..<100 where !((try? String(contentsOfFile: dir + "/session.log", encoding: .utf8)) ?? "").contains("session-open") {
            usleep(100_000)
        }
        let enforce = try lab.run(scenario.host, [cordon, "enforce", "--operator", "analyst", "--socket", socket, "--db", database], timeout: 60)
        #expect(enforce.succeeded, "\(enforce.stdout)\(enforce.stderr)")

        // Everything the seven networks allow works through the rules, from real clients.
        let sshAfter = try lab.run(scenario.peer, sshBase + ["echo in"], timeout: 30)
        #expect(sshAfter.succeeded && sshAfter.stdout.contains("in"), "ssh while enforcing: \(sshAfter.stderr)")
        let dnsAfter = try lab.run(scenario.host, ["getent", "ahostsv4", "cordon.test"], timeout: 20)
        #expect(dnsAfter.stdout.contains(S.peerV4), "dns while enforcing: \(dnsAfter.stderr)")
        let ntpAfter = try lab.run(scenario.host, [chronyd, "-Q", "-t", "20", "-u", "root", "-f", dir + "/chrony-client.conf"], timeout: 40)
        #expect(ntpAfter.succeeded, "ntp while enforcing: \(ntpAfter.stdout) \(ntpAfter.stderr)")
        let renew = try lab.run(scenario.host, ["dhclient", "-1", "-v", "-sf", dir + "/dhclient-script", "-lf", dir + "/dhclient.leases",
                                                 "-pf", dir + "/dhclient.pid", hostLink], timeout: 40)
        #expect(renew.succeeded, "dhcp while enforcing: \(renew.stderr)")
        if let pid = Int32(((try? String(contentsOfFile: dir + "/dhclient.pid", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGKILL)
        }
        try scenario.tcp(from: scenario.host, to: S.peerV4, port: 389)
        let metadataAfter = try lab.run(scenario.host, ["socat", "-t5", "-T5", "-", "TCP:169.254.169.254:80"], input: "GET / HTTP/1.0\r\n\r\n")
        #expect(metadataAfter.stdout.contains("meta"), "metadata while enforcing: \(metadataAfter.stderr)")
        try scenario.ping(from: scenario.host, to: S.peerV4)
        try scenario.ping(from: scenario.peer, to: S.hostV4)

        // And nothing else: the unusual port out is refused at once, an unapproved port in gets silence.
        // (Refused at once: a reset, "Connection refused", where a drop would time out.)
        let out = try lab.run(scenario.host, ["socat", "-u", "/dev/null", "TCP:\(S.peerV4):4711,connect-timeout=3"], timeout: 10)
        #expect(!out.succeeded && out.stderr.contains("Connection refused"), "\(out.stderr)")
        let started = Date()
        let into = try lab.run(scenario.peer, ["socat", "-u", "/dev/null", "TCP:\(S.hostV4):5555,connect-timeout=2"], timeout: 10)
        #expect(!into.succeeded && !into.stderr.contains("Connection refused") && Date().timeIntervalSince(started) >= 1.9, "\(into.stderr)")

        // The session opened before the switch lived through it.
        #expect(session.wait(timeout: 15) == 0)
        #expect(((try? String(contentsOfFile: dir + "/session.log", encoding: .utf8)) ?? "").contains("session-survived"))
        let confirm = try lab.run(scenario.host, [cordon, "confirm", "--operator", "analyst", "--socket", socket, "--db", database])
        #expect(confirm.succeeded, "\(confirm.stderr)")
        #expect(lab.stop(enforcing) == 0)
        // A confirmed ruleset outlives the agent.
        #expect(try lab.run(scenario.host, ["nft", "list", "table", "inet", "cordon"]).stdout.contains("policy drop"))
    }
}

/// The Debian daemons the standard-network test runs (`.ci/setup --tests` installs or unpacks them).
enum Peers {
    static let tools = ["sshd", "ssh", "ssh-keygen", "dnsmasq", "chronyd", "dhclient", "getent"]
    static var installed: Bool { Integration.required || tools.allSatisfy { Lab.which($0) != nil } }
    static var skipNote: Comment {
        Comment(rawValue: "skipped: needs root and \(tools.joined(separator: ", ")) (set CORDON_REQUIRE_NETNS=1 to make this a failure)")
    }
}
