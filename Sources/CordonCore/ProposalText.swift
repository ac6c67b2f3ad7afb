/// Writes a proposal as a ruleset file a reviewer can read top to bottom: the standard networks
/// that were used, each with what was seen; then, commented out in place, a candidate network
/// and rule for every leftover group, so allowing one is uncommenting two blocks.
public enum ProposalText {
    public static func render(_ proposal: Proposer.Proposal, names: ServiceNames, flowCount: Int,
                              firstSeen: Int64?, lastSeen: Int64?, listed: Int = 8) -> String {
        var out: [String] = []
        var span = ""
        if let firstSeen, let lastSeen { span = ", seen \(TimeText.rfc3339(firstSeen)) to \(TimeText.rfc3339(lastSeen))" }
        out.append("# Proposed by `cordon propose` from \(flowCount) recorded flow aggregates\(span).")
        out.append("# Check it with `cordon review FILE`; approve it with `cordon approve FILE --operator NAME`.")
        out.append("# Everything this file does not allow is rejected once the host enforces.")
        let ruleset = proposal.ruleset
        if let name = ruleset.name { out.append("name: \(name)") }
        if let description = ruleset.description { out.append("description: \(quoted(description))") }
        out.append("")
        out.append("networks:")
        for network in ruleset.networks {
            let seen = proposal.seen[network.name] ?? []
            let connections = proposal.connections[network.name] ?? 0
            out.append("  # \(network.name): \(connections) connection\(connections == 1 ? "" : "s") with \(seen.count) address\(seen.count == 1 ? "" : "es"): \(list(seen, listed))")
            if !Proposer.narrowed.contains(network.name) && network.entries.contains(where: { $0.length == 0 }) {
                out.append("  # Hardening: these entries allow anywhere; narrow them to the addresses above (or your admin networks) once you trust the list.")
            }
            out.append(contentsOf: block(network, indent: "  "))
        }
        let candidates = proposal.candidates.filter { $0.direction != .forward }
        if !candidates.isEmpty {
            out.append("")
            out.append("  # Somewhere: flows no standard network explains. To allow one, uncomment its network here")
            out.append("  # and its rule below. Entries are the addresses seen; widen them only on purpose.")
            for candidate in candidates {
                out.append("  #")
                out.append("  # \(summary(candidate, names: names, listed: listed))")
                out.append(contentsOf: block(network(for: candidate, names: names), indent: "  ").map { "  # " + $0.dropFirst(2) })
            }
        }
        for (title, rules, key, direction) in [("incoming", ruleset.incoming, "from", Direction.inbound),
                                                ("outgoing", ruleset.outgoing, "to", Direction.outbound)] {
            out.append("")
            out.append("\(title):")
            for rule in rules { out.append("  - \(key): \(rule.network)") }
            for candidate in candidates where candidate.direction == direction {
                out.append("  # - \(key): \(network(for: candidate, names: names).name)")
            }
        }
        let forwarded = proposal.candidates.filter { $0.direction == .forward }
        if !forwarded.isEmpty {
            out.append("")
            out.append("# Forwarded through this host (not governed by a host ruleset; listed for the record):")
            for candidate in forwarded { out.append("#   \(summary(candidate, names: names, listed: listed))") }
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// The candidate network for a leftover group: named after direction and service.
    public static func network(for candidate: Proposer.Candidate, names: ServiceNames) -> ExternalNetwork {
        let service: Service
        var label: String
        if IPProtocolNumber.isICMP(candidate.transport) {
            service = .icmp(transport: candidate.transport, type: UInt8(candidate.service >> 8), code: UInt8(candidate.service & 0xFF))
            label = "\(IPProtocolNumber.name(candidate.transport))-\(candidate.service >> 8)-\(candidate.service & 0xFF)"
        } else if IPProtocolNumber.hasPorts(candidate.transport) {
            service = .ports(transport: candidate.transport, range: candidate.service...candidate.service)
            let name = names.name(transport: candidate.transport, port: candidate.service).map(sanitized)
            label = [name, IPProtocolNumber.name(candidate.transport), String(candidate.service)].compactMap { $0 }.joined(separator: "-")
        } else {
            service = .icmp(transport: candidate.transport, type: nil, code: nil)
            label = "proto-\(candidate.transport)"
        }
        label = (candidate.direction == .inbound ? "in-" : "out-") + label
        // By name where lookups named the remotes: the addresses behind a name change; what a
        // program asked for does not. Remotes no lookup named stay listed by address.
        let patterns = candidate.namePatterns
        guard !patterns.isEmpty else {
            return ExternalNetwork(name: String(label.prefix(RulesetLimits.nameLength)), entries: candidate.remotes, services: [service])
        }
        return ExternalNetwork(name: String(label.prefix(RulesetLimits.nameLength)), entries: candidate.unnamed, names: patterns, services: [service])
    }

    public static func summary(_ candidate: Proposer.Candidate, names: ServiceNames, listed: Int) -> String {
        var service: String
        if IPProtocolNumber.isICMP(candidate.transport) {
            service = "\(IPProtocolNumber.name(candidate.transport)) type \(candidate.service >> 8) code \(candidate.service & 0xFF)"
        } else {
            service = "\(IPProtocolNumber.name(candidate.transport))/\(candidate.service)"
            if let name = names.name(transport: candidate.transport, port: candidate.service) { service += " (\(name))" }
        }
        let peers = candidate.direction == .inbound ? "from" : "to"
        let named = candidate.names.isEmpty ? "" : " (by name: \(candidate.names.prefix(listed).joined(separator: ", "))"
            + (candidate.names.count > listed ? " and \(candidate.names.count - listed) more" : "") + ")"
        return "\(candidate.direction.rawValue) \(service): \(candidate.connections) connection\(candidate.connections == 1 ? "" : "s") "
            + "\(peers) \(list(candidate.remotes, listed))\(named); last seen \(TimeText.rfc3339(candidate.lastSeen))"
    }

    static func block(_ network: ExternalNetwork, indent: String) -> [String] {
        var lines = ["\(indent)- name: \(network.name)"]
        if let usage = network.usage { lines.append("\(indent)  usage: \(usage.rawValue)") }
        if let comment = network.comment { lines.append("\(indent)  comment: \(quoted(comment))") }
        // A wildcard is quoted: YAML reads a plain `*` as an alias.
        let names = network.names.map { $0.description.hasPrefix("*") ? "\"\($0)\"" : $0.description }
        lines.append("\(indent)  entries: [\((network.entries.map { entry($0) } + names).joined(separator: ", "))]")
        lines.append("\(indent)  services: [\(network.services.map(\.description).joined(separator: ", "))]")
        return lines
    }

    /// CIDRs print with their length so an entry never silently means a single address.
    static func entry(_ prefix: IPPrefix) -> String {
        let text = prefix.isSingleAddress ? prefix.address.description : prefix.description
        return text.contains(":") ? "\"\(text)\"" : text
    }

    static func list(_ prefixes: [IPPrefix], _ limit: Int) -> String {
        let shown = prefixes.prefix(limit).map(\.description).joined(separator: ", ")
        return prefixes.count > limit ? "\(shown) and \(prefixes.count - limit) more" : shown
    }

    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func sanitized(_ name: String) -> String {
        String(name.lowercased().map { ($0.isLetter || $0.isNumber) && $0.isASCII ? $0 : "-" })
    }
}
