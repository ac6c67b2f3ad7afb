import Foundation

extension FlowRecord {
    /// The aggregate's key and totals back from its record: the server reviews what agents
    /// uploaded with the same `Review` a host runs on its own record. nil for a row that does not
    /// read as one (the server refuses those at upload).
    public var aggregate: (key: FlowKey, stats: FlowStats)? {
        FleetFlow(direction: direction, protocol: `protocol`, localAddress: localAddress, localPort: localPort, remoteAddress: remoteAddress,
                  remotePort: remotePort, icmpType: icmpType, icmpCode: icmpCode, verdict: verdict, connections: connections, packets: packets,
                  bytes: bytes, firstSeen: firstSeen, lastSeen: lastSeen).map { ($0.key, $0.stats) }
    }
}

/// One uploaded flow as the fleet's propose and review read it: typed, with no text kept. A tier
/// of 1,000 hosts is 2M of them, read straight from the stored columns.
public struct FleetFlow: Sendable, Equatable {
    public var key: FlowKey
    public var stats: FlowStats
    public var names: [String]

    public init(key: FlowKey, stats: FlowStats, names: [String] = []) {
        self.key = key
        self.stats = stats
        self.names = names
    }

    public init?(_ record: FlowRecord) {
        self.init(direction: record.direction, protocol: record.protocol, localAddress: record.localAddress, localPort: record.localPort,
                  remoteAddress: record.remoteAddress, remotePort: record.remotePort, icmpType: record.icmpType, icmpCode: record.icmpCode,
                  verdict: record.verdict, connections: record.connections, packets: record.packets, bytes: record.bytes,
                  firstSeen: record.firstSeen, lastSeen: record.lastSeen, names: record.remoteNames)
    }

    /// The record's fields as text, as stored; nil where one does not read.
    public init?<S: StringProtocol>(direction: Direction, protocol: S, localAddress: S, localPort: UInt16?, remoteAddress: S, remotePort: UInt16?,
                                    icmpType: UInt8?, icmpCode: UInt8?, verdict: FlowVerdict, connections: UInt64, packets: UInt64, bytes: UInt64,
                                    firstSeen: S, lastSeen: S, names: [String] = []) {
        guard let transport = IPProtocolNumber.parse(String(`protocol`)), let local = IPAddress(String(localAddress)),
              let remote = IPAddress(String(remoteAddress)).map({ IPPrefix($0) }) ?? IPPrefix(String(remoteAddress)),
              let first = TimeText.unix(firstSeen), let last = TimeText.unix(lastSeen) else { return nil }
        let port = direction == .inbound ? localPort : remotePort
        key = FlowKey(direction: direction, transport: transport, local: local, remote: remote, port: port, icmpType: icmpType, icmpCode: icmpCode,
                      verdict: verdict)
        stats = FlowStats(connections: connections, packets: packets, bytes: bytes, firstSeen: first, lastSeen: last)
        self.names = names
    }
}

/// A ruleset reviewed against one host's uploaded record, on the server. What the server does
/// not know of a host it reads from the record: its resolvers are the peers it sent DNS to, and
/// DHCP and SSH in use are the flows that show them (`Review.risks`).
public enum FleetReview {
    public struct Verdict: Sendable {
        public var flows: Int
        public var allowed: Int
        /// Flows it had that the ruleset would reject, most connections first (the first
        /// `shown` of them as records: a review of 1,000 hosts formats only what it shows).
        public var rejected: [FlowRecord]
        public var rejectedCount: Int
        public var risks: [Review.Risk]
    }

    /// - Parameter since: only flows last seen at or after this Unix time count.
    /// - Parameter management: the host's management channel as it reported it: enforcement
    ///   always allows it (the server among it), so its flows are never the ruleset's to reject.
    public static func review(_ ruleset: Ruleset, flows records: [FlowRecord], since: Int64,
                              management: [ManagementChannel.WhitelistEntry] = [], shown: Int = .max) -> Verdict {
        review(ruleset, flows: records.compactMap(FleetFlow.init), since: since, management: management, shown: shown)
    }

    public static func review(_ ruleset: Ruleset, flows uploaded: [FleetFlow], since: Int64,
                              management: [ManagementChannel.WhitelistEntry] = [], shown: Int = .max) -> Verdict {
        var ruleset = ruleset
        for (index, entry) in management.enumerated() {
            guard let transport = IPProtocolNumber.parse(entry.protocol), let prefix = IPPrefix(entry.address) else { continue }
            let service: Service = IPProtocolNumber.isICMP(transport) ? .icmp(transport: transport, type: nil, code: nil)
                : .ports(transport: transport, range: entry.port.map { $0...$0 } ?? 1...65535)
            let name = "cordon-management-\(index)"
            ruleset.networks.append(ExternalNetwork(name: name, entries: [prefix], services: [service]))
            ruleset.outgoing.append(Rule(network: name))
        }
        var flows: [(key: FlowKey, stats: FlowStats)] = [], names: [FlowKey: [String]] = [:]
        for flow in uploaded where flow.stats.lastSeen >= since && flow.key.verdict == .allowed {
            flows.append((flow.key, flow.stats))
            if !flow.names.isEmpty { names[flow.key] = flow.names }
        }
        var context = Review.Context()
        var resolvers: [IPAddress] = []
        for (key, _) in flows where key.direction == .outbound && key.service == 53 && Int(key.remote.length) == key.remote.address.family.bitWidth
            && (key.transport == IPProtocolNumber.udp || key.transport == IPProtocolNumber.tcp) && !resolvers.contains(key.remote.address) {
            resolvers.append(key.remote.address)
        }
        context.resolvers = resolvers
        let review = Review(ruleset: ruleset, flows: flows, names: names, context: context)
        let rejected = review.rejected.filter { $0.key.direction != .forward }
            .sorted { ($0.stats.connections, $0.stats.lastSeen, $1.key.remote, $1.key.service) > ($1.stats.connections, $1.stats.lastSeen, $0.key.remote, $0.key.service) }
        return Verdict(flows: flows.count, allowed: review.allowed.count, rejected: rejected.prefix(shown).map { review.record($0.key, $0.stats) },
                       rejectedCount: rejected.count, risks: review.risks)
    }
}
