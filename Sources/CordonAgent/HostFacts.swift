#if canImport(Glibc)
import Glibc
#endif
import CordonConntrack
import CordonCore
import CordonStore
import Foundation

/// Facts about this host that `review` weighs besides the recorded flows: its resolvers, whether
/// a DHCP client runs, and the inbound sessions open right now (the operator's own, perhaps).
public enum HostFacts {
    /// DHCP client daemons, by process name.
    public static let dhcpClients: Set<String> = ["dhclient", "dhcpcd", "udhcpc", "dhcp6c", "dhcpcd5"]

    /// - Parameter store: the database whose agent last installed a management channel (its
    ///   resolvers are always allowed while enforcing).
    public static func reviewContext(store: FlowStore? = nil,
                                     environment: [String: String] = ProcessInfo.processInfo.environment) -> Review.Context {
        var context = Review.Context()
        let channel = store.flatMap { (try? $0.persistedManagement()) ?? nil }
        if let channel { context.managementResolvers = channel.resolvers }
        context.resolvers = resolvers(channel: channel, resolvConf: try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8))
        context.dhcpClientRunning = dhcpClientRunning()
        if let session = Review.sshSession(environment: environment["SSH_CONNECTION"]) { context.liveSessions.append(session) }
        // Established inbound SSH sessions in the live conntrack table (needs CAP_NET_ADMIN;
        // skipped without). Closing ones (TIME_WAIT) are nobody's lifeline any more.
        let local = HostAddresses.read()
        for entry in (try? ConntrackTable.dump()) ?? [] where entry.tcpState == ConntrackEntry.tcpEstablished {
            guard let key = local.flowKey(for: entry.tuple), key.direction == .inbound,
                  key.transport == IPProtocolNumber.tcp, key.service == 22,
                  !context.liveSessions.contains(where: { $0.port == 22 && $0.remote == key.remote.address }) else { continue }
            context.liveSessions.append((22, key.remote.address, key.local))
        }
        return context
    }

    /// The resolvers this host's lookups go to, as far as Cordon knows: the agent's (the channel
    /// it last installed holds its `--resolver`s, or the nameservers of /etc/resolv.conf at that
    /// apply when none were given); the nameservers of `resolvConf` only when no agent has
    /// installed a channel with resolvers.
    public static func resolvers(channel: ManagementChannel?, resolvConf: String?) -> [IPAddress] {
        if let channel, !channel.resolvers.isEmpty { return channel.resolvers }
        return resolvConf.map(Review.resolvers(resolvConf:)) ?? []
    }

    /// A DHCP client serves the network namespace it runs in; one in another namespace (another
    /// container, the machine's own) does not renew this host's addresses.
    static func dhcpClientRunning() -> Bool {
        let manager = FileManager.default
        let ownNamespace = try? manager.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        let processes = (try? manager.contentsOfDirectory(atPath: "/proc")) ?? []
        return processes.contains { pid in
            guard pid.allSatisfy(\.isNumber),
                  let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                  dhcpClients.contains(name.trimmingCharacters(in: .whitespacesAndNewlines)) else { return false }
            return (try? manager.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) == ownNamespace
        }
    }
}
