#if canImport(Glibc)
import Glibc
#endif
internal import CNftnl
import CordonCore
import CordonNetlink
import Foundation
import SystemPackage

/// The host's addresses, read with getifaddrs(3) and re-read whenever rtnetlink announces an
/// address change, so direction stays right when DHCP hands out a new lease.
public enum HostAddresses {
    /// Reads the addresses of the current network namespace.
    public static func read() -> LocalAddresses {
        var unicast = Set<IPAddress>()
        var broadcast = Set<IPAddress>()
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return LocalAddresses() }
        defer { freeifaddrs(list) }
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            if let address = entry.pointee.ifa_addr.flatMap(ipAddress) { unicast.insert(address) }
            if entry.pointee.ifa_flags & UInt32(IFF_BROADCAST) != 0,
               let address = entry.pointee.ifa_ifu.ifu_broadaddr.flatMap(ipAddress) {
                broadcast.insert(address)
            }
        }
        return LocalAddresses(unicast: unicast, broadcast: broadcast)
    }

    private static func ipAddress(_ socketAddress: UnsafeMutablePointer<sockaddr>) -> IPAddress? {
        switch Int32(socketAddress.pointee.sa_family) {
        case AF_INET:
            return socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                IPAddress(ipv4: UInt32(bigEndian: $0.pointee.sin_addr.s_addr))
            }
        case AF_INET6:
            return socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                var address = $0.pointee.sin6_addr
                return withUnsafeBytes(of: &address) { IPAddress(bytes: $0) }
            }
        default:
            return nil
        }
    }

    /// Calls `changed` with fresh addresses after every rtnetlink address notification, on a
    /// thread of its own, for the life of the process.
    public static func watch(_ changed: @escaping @Sendable (LocalAddresses) -> Void) throws {
        let socket: NetlinkSocket
        do { socket = try NetlinkSocket(family: NETLINK_ROUTE, groups: CNftnl_addressGroups) } catch {
            throw AgentError.system("subscribe to address changes", error.rawValue)
        }
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                do { _ = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) } } catch let error as Errno {
                    if error != .noBufferSpace { sleep(1) }
                } catch {}
                // Any message (or an overrun) means "something changed": re-read it all.
                changed(read())
            }
        }
    }
}
