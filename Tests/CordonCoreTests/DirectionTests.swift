import CordonCore
import Testing

@Suite struct DirectionTests {
    let host4 = IPAddress("192.0.2.10")!
    let host6 = IPAddress("2001:db8::10")!
    let peer = IPAddress("192.0.2.20")!
    var local: LocalAddresses {
        LocalAddresses(unicast: [host4, host6, IPAddress("127.0.0.1")!], broadcast: [IPAddress("192.0.2.255")!])
    }

    @Test func inboundIsKeyedByLocalServicePort() throws {
        let tuple = ConnectionTuple(transport: IPProtocolNumber.tcp, source: peer, destination: host4,
                                    sourcePort: 51_234, destinationPort: 22)
        let key = try #require(local.flowKey(for: tuple))
        #expect(key.direction == .inbound)
        #expect(key.local == host4)
        #expect(key.remote == IPPrefix(peer))
        #expect(key.localPort == 22)
        #expect(key.remotePort == nil)
    }

    @Test func outboundIsKeyedByRemotePortAndDropsTheEphemeralPort() throws {
        let a = ConnectionTuple(transport: IPProtocolNumber.udp, source: host4, destination: peer, sourcePort: 40_001, destinationPort: 53)
        let b = ConnectionTuple(transport: IPProtocolNumber.udp, source: host4, destination: peer, sourcePort: 40_002, destinationPort: 53)
        let key = try #require(local.flowKey(for: a))
        #expect(key.direction == .outbound)
        #expect(key.remotePort == 53)
        #expect(key.localPort == nil)
        #expect(local.flowKey(for: b) == key)
    }

    @Test func icmpUsesTypeAndCode() throws {
        let echo = ConnectionTuple(transport: IPProtocolNumber.icmpv6, source: IPAddress("2001:db8::20")!, destination: host6,
                                   icmpType: 128, icmpCode: 0)
        let key = try #require(local.flowKey(for: echo))
        #expect(key.direction == .inbound)
        #expect(key.icmpType == 128)
        #expect(key.icmpCode == 0)
        #expect(key.localPort == nil && key.remotePort == nil)
    }

    @Test func loopbackAndSelfTrafficAreIgnored() {
        let lo = IPAddress("127.0.0.1")!
        #expect(local.flowKey(for: ConnectionTuple(transport: 6, source: lo, destination: lo, destinationPort: 22)) == nil)
        #expect(local.flowKey(for: ConnectionTuple(transport: 6, source: host4, destination: host4, destinationPort: 22)) == nil)
        #expect(local.flowKey(for: ConnectionTuple(transport: 6, source: IPAddress("::1")!, destination: IPAddress("::1")!)) == nil)
    }

    @Test func trafficBetweenTwoOtherHostsIsForward() throws {
        let tuple = ConnectionTuple(transport: 6, source: IPAddress("198.51.100.2")!, destination: peer, sourcePort: 40_000, destinationPort: 8080)
        let key = try #require(local.flowKey(for: tuple))
        #expect(key.direction == .forward)
        #expect(key.local == IPAddress("198.51.100.2"))
        #expect(key.remote == IPPrefix(peer))
        #expect(key.remotePort == 8080)
    }

    @Test func broadcastAndDhcpDiscoverCountAsThisHost() throws {
        // A DHCP server answering to the subnet broadcast, and this host's discover from 0.0.0.0.
        let offer = ConnectionTuple(transport: 17, source: peer, destination: IPAddress("192.0.2.255")!, sourcePort: 67, destinationPort: 68)
        #expect(local.flowKey(for: offer)?.direction == .inbound)
        let discover = ConnectionTuple(transport: 17, source: IPAddress("0.0.0.0")!, destination: IPAddress("255.255.255.255")!,
                                       sourcePort: 68, destinationPort: 67)
        let key = try #require(local.flowKey(for: discover))
        #expect(key.direction == .outbound)
        #expect(key.remotePort == 67)
    }

    @Test func dhcpOfferToTheAddressBeingOfferedIsInbound() throws {
        let offer = ConnectionTuple(transport: 17, source: peer, destination: IPAddress("192.0.2.120")!, sourcePort: 67, destinationPort: 68)
        let key = try #require(local.flowKey(for: offer))
        #expect(key.direction == .inbound)
        #expect(key.localPort == 68)
        // Other traffic to an address the host does not hold is still forwarded traffic.
        let other = ConnectionTuple(transport: 17, source: peer, destination: IPAddress("192.0.2.120")!, sourcePort: 68, destinationPort: 67)
        #expect(local.flowKey(for: other)?.direction == .forward)
    }

    @Test func redirectedConnectionIsInboundOnTheRealServicePort() throws {
        // DNAT of 203.0.113.5:80 to this host's port 8080.
        let tuple = ConnectionTuple(transport: 6, source: peer, destination: IPAddress("203.0.113.5")!, sourcePort: 50_000,
                                    destinationPort: 80, replySource: host4, replySourcePort: 8080)
        let key = try #require(local.flowKey(for: tuple))
        #expect(key.direction == .inbound)
        #expect(key.local == host4)
        #expect(key.localPort == 8080)
    }

    @Test func directionFollowsAddressChanges() {
        let tuple = ConnectionTuple(transport: 6, source: IPAddress("192.0.2.99")!, destination: peer, destinationPort: 443)
        #expect(local.flowKey(for: tuple)?.direction == .forward)
        let renumbered = LocalAddresses(unicast: [IPAddress("192.0.2.99")!])
        #expect(renumbered.flowKey(for: tuple)?.direction == .outbound)
    }
}
