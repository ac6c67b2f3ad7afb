/// IANA service names by protocol and port, read from /etc/services text, so that leftover flows
/// can be shown as "syslog (udp/514)" rather than a bare number.
public struct ServiceNames: Sendable {
    private var names: [UInt32: String] = [:]

    public init() {}

    /// Parses services(5): `name port/protocol [aliases...] [# comment]`. The first name given for
    /// a port and protocol wins; malformed lines are skipped.
    public init(servicesFile text: String) {
        for line in text.split(separator: "\n") {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2 else { continue }
            let portAndProtocol = fields[1].split(separator: "/")
            guard portAndProtocol.count == 2, let port = UInt16(portAndProtocol[0]),
                  let transport = IPProtocolNumber.parse(String(portAndProtocol[1])) else { continue }
            let key = UInt32(transport) << 16 | UInt32(port)
            if names[key] == nil { names[key] = String(fields[0]) }
        }
    }

    public func name(transport: UInt8, port: UInt16) -> String? {
        names[UInt32(transport) << 16 | UInt32(port)]
    }
}
