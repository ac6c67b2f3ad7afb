/// A host's effective policy: the union of the allow rules of every ruleset assigned to it.
/// Rulesets hold only allows, so the union needs no order: a flow one of them allows is allowed.
/// What needs care is the networks' names, which each ruleset chose for itself: two rulesets may
/// both call something `dns` and mean different resolvers.
public enum PolicyComposer {
    /// One ruleset version as an assignment brings it to a host.
    public struct Part: Sendable {
        public var ruleset: Ruleset
        public var name: String
        public var version: Int64
        public var assignment: String

        public init(ruleset: Ruleset, name: String, version: Int64, assignment: String) {
            self.ruleset = ruleset
            self.name = name
            self.version = version
            self.assignment = assignment
        }
    }

    /// Where one rule of the union came from.
    public struct Source: Hashable, Sendable {
        /// `incoming from NETWORK` or `outgoing to NETWORK`, as the rule reads in the union.
        public var rule: String
        public var ruleset: String
        public var version: Int64
        public var assignment: String
    }

    /// The union, and each rule's sources. The same network (same name, same definition) in two
    /// rulesets is one network; a name two rulesets define differently is kept apart as
    /// `RULESET_NAME` for each (and `-2`, `-3` where that is taken too). Rules in the union are
    /// unique; a rule two parts bring lists both.
    /// Parts are taken in the order of (ruleset name, version, assignment), so the text, and with
    /// it the digest, does not depend on the order assignments were read in.
    public static func compose(_ parts: [Part], name: String = "effective") -> (ruleset: Ruleset, sources: [Source]) {
        let ordered = parts.sorted { ($0.name, $0.version, $0.assignment) < ($1.name, $1.version, $1.assignment) }
        var definitions: [String: [ExternalNetwork]] = [:]
        for part in ordered {
            for network in part.ruleset.networks where !(definitions[network.name] ?? []).contains(network) {
                definitions[network.name, default: []].append(network)
            }
        }
        // Every name in the union names one definition: a name already taken by another one
        // (a literal `web_dns` beside a renamed one, two versions of one ruleset, names cut to the
        // same length) gets `-2`, `-3`, ... A rule must never reach another ruleset's network.
        var networks: [ExternalNetwork] = [], taken: [String: ExternalNetwork] = [:]
        var incoming: [Rule] = [], outgoing: [Rule] = [], sources: [Source] = []
        for part in ordered {
            var names: [String: String] = [:]
            for network in part.ruleset.networks {
                // Within a name's 63 characters: at most 30 of the ruleset's and 28 of the network's.
                let base = (definitions[network.name]?.count ?? 1) > 1 ? "\(part.name.prefix(30))_\(network.name.prefix(28))" : network.name
                var candidate = String(base.prefix(59)), suffix = 1
                while let holder = taken[candidate], holder.withName(network.name) != network {
                    suffix += 1
                    candidate = "\(base.prefix(59))-\(suffix)"
                }
                var renamed = network
                renamed.name = candidate
                if taken[candidate] == nil {
                    taken[candidate] = renamed
                    networks.append(renamed)
                }
                names[network.name] = candidate
            }
            // This part's name for each of its networks in the union.
            func unionName(_ network: String) -> String { names[network] ?? network }
            for (rules, into, word) in [(part.ruleset.incoming, 0, "incoming from"), (part.ruleset.outgoing, 1, "outgoing to")] {
                for rule in rules {
                    let renamed = Rule(network: unionName(rule.network), comment: rule.comment)
                    if into == 0 {
                        if !incoming.contains(where: { $0.network == renamed.network }) { incoming.append(renamed) }
                    } else if !outgoing.contains(where: { $0.network == renamed.network }) {
                        outgoing.append(renamed)
                    }
                    let source = Source(rule: "\(word) \(renamed.network)", ruleset: part.name, version: part.version, assignment: part.assignment)
                    if !sources.contains(source) { sources.append(source) }
                }
            }
        }
        // Only the networks a rule uses: a ruleset's unused networks allow nothing.
        let used = Set((incoming + outgoing).map(\.network))
        return (Ruleset(name: name, networks: networks.filter { used.contains($0.name) }, incoming: incoming, outgoing: outgoing), sources)
    }
}

extension ExternalNetwork {
    /// The same network under another name: what two rulesets' definitions are compared as.
    func withName(_ name: String) -> ExternalNetwork {
        var copy = self
        copy.name = name
        return copy
    }
}
