/// A rollout's regression: traffic a host rejects now that its own discovery record shows it had
/// before the rollout (a peer and port it used to reach, or that used to reach it). A ruleset
/// that refuses only what the host never did is doing its job; one that refuses what it did is
/// breaking something real, and that is what halts a rollout.
public enum Regression {
    /// The allowed flow of `record` that `rejected` repeats, first seen before `before` (RFC
    /// 3339); nil when the host never had it.
    public static func earlier(_ rejected: FlowRecord, in record: [FlowRecord], before: String) -> FlowRecord? {
        guard rejected.verdict == .rejected else { return nil }
        return record.filter { flow in
            flow.verdict == .allowed && flow.firstSeen < before && flow.direction == rejected.direction && flow.protocol == rejected.protocol
                && flow.remoteAddress == rejected.remoteAddress && service(flow) == service(rejected)
        }.max { $0.connections < $1.connections }
    }

    /// The port (or ICMP type) that names the service: the peer's when the host opened the flow,
    /// the host's own when the peer did.
    static func service(_ flow: FlowRecord) -> String {
        if let type = flow.icmpType { return "icmp \(type)" }
        return "\((flow.direction == .outbound ? flow.remotePort : flow.localPort).map(String.init) ?? "-")"
    }

    /// "outbound tcp to 198.51.100.7:8080, which its record shows 12 connections of since …".
    public static func describe(_ rejected: FlowRecord, earlier: FlowRecord) -> String {
        let peer = rejected.direction == .outbound ? "to \(rejected.remoteAddress):\(service(rejected))"
            : "from \(rejected.remoteAddress) to port \(service(rejected))"
        return "rejected \(rejected.direction.rawValue) \(rejected.protocol) \(peer) (\(rejected.connections) connections since \(rejected.firstSeen)), "
            + "which its record shows allowed before the rollout (\(earlier.connections) connections, first seen \(earlier.firstSeen))"
    }
}
