/// One conntrack entry as the kernel reports it: the original tuple (as the opener sent it) and
/// the reply tuple (as the answer comes back, after any NAT).
public struct ConnectionTuple: Hashable, Sendable {
    public var transport: UInt8
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// Where replies come from. Differs from `destination` when the connection was DNATed.
    public var replySource: IPAddress
    /// The port replies come from: the service port after a redirect.
    public var replySourcePort: UInt16
    public var icmpType: UInt8
    public var icmpCode: UInt8

    public init(transport: UInt8, source: IPAddress, destination: IPAddress,
                sourcePort: UInt16 = 0, destinationPort: UInt16 = 0,
                replySource: IPAddress? = nil, replySourcePort: UInt16? = nil, icmpType: UInt8 = 0, icmpCode: UInt8 = 0) {
        self.transport = transport
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.replySource = replySource ?? destination
        self.replySourcePort = replySourcePort ?? destinationPort
        self.icmpType = icmpType
        self.icmpCode = icmpCode
    }
}

/// The host's own addresses, which is all that decides direction.
///
/// Kept current by the agent as addresses come and go; a snapshot is a value so the per-event path
/// reads it without coordination.
public struct LocalAddresses: Sendable, Equatable {
    public private(set) var unicast: Set<IPAddress>
    /// Directed broadcast addresses of the host's IPv4 subnets (a DHCP server may answer to them).
    public private(set) var broadcast: Set<IPAddress>

    public init(unicast: Set<IPAddress> = [], broadcast: Set<IPAddress> = []) {
        self.unicast = unicast
        self.broadcast = broadcast
    }

    public func isLocal(_ address: IPAddress) -> Bool { unicast.contains(address) }

    /// Addresses a packet can be sent to and still be for this host.
    func receives(_ address: IPAddress) -> Bool {
        unicast.contains(address) || broadcast.contains(address) || address.isMulticast || address.isLimitedBroadcast
    }

    /// A DHCP server's answer to a client port (udp 67→68, DHCPv6 547→546) is for this host even
    /// when it is addressed to the address being offered, which the host does not hold yet.
    static func isDHCPReply(_ tuple: ConnectionTuple) -> Bool {
        tuple.transport == IPProtocolNumber.udp
            && (tuple.sourcePort == 67 && tuple.destinationPort == 68 || tuple.sourcePort == 547 && tuple.destinationPort == 546)
    }

    /// Decides which side of a connection is this host and builds the aggregation key.
    ///
    /// Returns nil for traffic that is never subject to policy: loopback and the host talking to
    /// itself. A source of 0.0.0.0 or :: is this host before it has an address (DHCP discover).
    public func flowKey(for tuple: ConnectionTuple) -> FlowKey? {
        let src = tuple.source, dst = tuple.destination
        if src.isLoopback || dst.isLoopback { return nil }
        let icmp = IPProtocolNumber.isICMP(tuple.transport)
        let hasPorts = IPProtocolNumber.hasPorts(tuple.transport)
        let port: UInt16 = hasPorts ? tuple.destinationPort : 0
        func key(_ direction: Direction, local: IPAddress, remote: IPAddress) -> FlowKey {
            icmp
                ? FlowKey(direction: direction, transport: tuple.transport, local: local, remote: IPPrefix(remote),
                          icmpType: tuple.icmpType, icmpCode: tuple.icmpCode)
                : FlowKey(direction: direction, transport: tuple.transport, local: local, remote: IPPrefix(remote),
                          service: port)
        }
        if isLocal(src) || src.isUnspecified {
            if isLocal(dst) { return nil }
            return key(.outbound, local: src, remote: dst)
        }
        if receives(dst) || Self.isDHCPReply(tuple) {
            return key(.inbound, local: dst, remote: src)
        }
        if isLocal(tuple.replySource) {
            // DNAT to this host (a redirect): the service is where replies come from.
            var redirected = key(.inbound, local: tuple.replySource, remote: src)
            if hasPorts { redirected.service = tuple.replySourcePort }
            return redirected
        }
        return key(.forward, local: src, remote: dst)
    }
}
