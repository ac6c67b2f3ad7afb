/// Writes a ruleset back as a file that `RulesetParser` reads to the same ruleset.
public enum RulesetText {
    public static func render(_ ruleset: Ruleset, header: [String] = []) -> String {
        var out = header.map { "# " + $0 }
        if let name = ruleset.name { out.append("name: \(name)") }
        if let description = ruleset.description { out.append("description: \(ProposalText.quoted(description))") }
        if let expression = ruleset.appliesTo.expression {
            // Single quotes: YAML's only escape there is '', and the selector's own quotes and
            // backslashes stay as they are.
            out.append("appliesTo: '\(expression.description.replacingOccurrences(of: "'", with: "''"))'")
        } else if !ruleset.appliesTo.isEmpty {
            out.append("appliesTo:")
            if !ruleset.appliesTo.agents.isEmpty { out.append("  agents: [\(ruleset.appliesTo.agents.map(ProposalText.quoted).joined(separator: ", "))]") }
            if !ruleset.appliesTo.tags.isEmpty { out.append("  tags: [\(ruleset.appliesTo.tags.map(ProposalText.quoted).joined(separator: ", "))]") }
        }
        out.append("")
        out.append("networks:")
        for network in ruleset.networks { out += ProposalText.block(network, indent: "  ") }
        for (title, rules, key) in [("incoming", ruleset.incoming, "from"), ("outgoing", ruleset.outgoing, "to")] {
            out.append("")
            out.append("\(title):")
            for rule in rules {
                out.append("  - \(key): \(rule.network)")
                if let comment = rule.comment { out.append("    comment: \(ProposalText.quoted(comment))") }
            }
        }
        return out.joined(separator: "\n") + "\n"
    }
}

/// The leftover groups of a ruleset against a record: what `review --interactive` walks through.
public enum Leftovers {
    /// - Parameter names: the names programs asked for, per flow (`FlowStore.flowNames(queriedOnly:)`).
    public static func candidates(_ review: Review, names: [FlowKey: [String]] = [:]) -> [Proposer.Candidate] {
        Proposer.Candidate.grouping(review.rejected.filter { $0.key.direction != .forward }, names: names)
    }

    /// Adds a candidate to a ruleset: its network (anywhere, or narrowed to the remotes seen)
    /// and the rule for its direction. A name already taken gets a numeric suffix.
    public static func allow(_ candidate: Proposer.Candidate, narrowed: Bool, in ruleset: inout Ruleset, names: ServiceNames) {
        var network = ProposalText.network(for: candidate, names: names)
        if !narrowed {
            network.entries = [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!]
            network.names = []
        }
        let base = network.name
        var suffix = 2
        while ruleset.network(named: network.name) != nil {
            network.name = "\(base.prefix(RulesetLimits.nameLength - 4))-\(suffix)"
            suffix += 1
        }
        network.comment = "Allowed in review: " + ProposalText.summary(candidate, names: names, listed: 8)
        ruleset.networks.append(network)
        let rule = Rule(network: network.name)
        if candidate.direction == .inbound { ruleset.incoming.append(rule) } else { ruleset.outgoing.append(rule) }
    }
}
