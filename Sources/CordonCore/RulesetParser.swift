import Yams

/// A problem in a ruleset file, located: the file, the line and column, and the field as a path
/// (`networks[2].services[0]`), with what would have been valid.
public struct RulesetError: Error, Hashable, Sendable, CustomStringConvertible {
    public let file: String
    /// 1-based.
    public let line: Int
    public let column: Int
    public let field: String
    public let message: String

    public var description: String { "\(file):\(line):\(column): \(field): \(message)" }

    public init(file: String, line: Int, column: Int, field: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
    }
}

/// Limits that keep one ruleset within what an nftables transaction and a reviewer can handle.
public enum RulesetLimits {
    public static let networks = 1024
    public static let entriesPerNetwork = 100_000
    public static let servicesPerNetwork = 64
    public static let rules = 4096
    public static let nameLength = 63
    public static let commentLength = 1024
    public static let selectors = 256
}

/// Reads a ruleset file. Every error names the file, line, column and field and says what would
/// be valid; a file with any error yields no ruleset at all.
public enum RulesetParser {
    public static func parse(_ text: String, file: String) throws -> Ruleset {
        if let (line, column) = YAMLDepth.firstTooDeep(text) {
            throw RulesetError(file: file, line: line, column: column, field: "(file)",
                               message: "nested deeper than \(YAMLDepth.limit) levels; a ruleset needs a handful")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw RulesetError(file: file, line: yamlLine(error), column: 1, field: "(file)", message: "not valid YAML: \(error)")
        }
        guard let root else { throw RulesetError(file: file, line: 1, column: 1, field: "(file)", message: "empty ruleset") }
        return try Reader(file: file, lines: text.split(separator: "\n", omittingEmptySubsequences: false)).ruleset(root)
    }

    private static func yamlLine(_ error: YamlError) -> Int {
        if case .scanner(_, _, let mark, _) = error { return mark.line }
        if case .parser(_, _, let mark, _) = error { return mark.line }
        return 1
    }

    /// Walks the YAML tree with the current field path, so errors can say where they are.
    private struct Reader {
        let file: String
        /// The source, to point at the character inside an `appliesTo` expression.
        let lines: [Substring]

        func fail(_ node: Node?, _ field: String, _ message: String) -> RulesetError {
            RulesetError(file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, field: field, message: message)
        }

        func mapping(_ node: Node, _ field: String, allowed: [String]) throws -> [(key: String, keyNode: Node, value: Node)] {
            guard let mapping = node.mapping else { throw fail(node, field, "expected a mapping with keys \(allowed.joined(separator: ", "))") }
            var seen = Set<String>()
            var result: [(String, Node, Node)] = []
            for (keyNode, value) in mapping {
                let key = keyNode.string ?? ""
                let path = field.isEmpty ? key : "\(field).\(key)"
                guard allowed.contains(key) else {
                    throw fail(keyNode, path, "unknown field; valid here: \(allowed.joined(separator: ", "))")
                }
                guard seen.insert(key).inserted else { throw fail(keyNode, path, "given twice") }
                result.append((key, keyNode, value))
            }
            return result
        }

        func sequence(_ node: Node, _ field: String, limit: Int) throws -> [Node] {
            guard let sequence = node.sequence else { throw fail(node, field, "expected a list") }
            guard sequence.count <= limit else { throw fail(node, field, "\(sequence.count) items; at most \(limit) allowed") }
            return Array(sequence)
        }

        func string(_ node: Node, _ field: String, maxLength: Int = RulesetLimits.commentLength) throws -> String {
            guard case .scalar(let scalar) = node else { throw fail(node, field, "expected text") }
            guard scalar.string.count <= maxLength else { throw fail(node, field, "longer than \(maxLength) characters") }
            return scalar.string
        }

        func name(_ node: Node, _ field: String) throws -> String {
            let text = try string(node, field)
            let startsWell = text.first.map { ($0.isLowercase || $0.isNumber) && $0.isASCII } ?? false
            guard startsWell, text.count <= RulesetLimits.nameLength, text.allSatisfy({ ($0.isLowercase && $0.isASCII) || ($0.isNumber && $0.isASCII) || $0 == "-" || $0 == "_" }) else {
                throw fail(node, field, "'\(text)' is not a valid name: use 1-\(RulesetLimits.nameLength) lowercase letters, digits, '-' or '_', starting with a letter or digit")
            }
            return text
        }

        func ruleset(_ root: Node) throws -> Ruleset {
            var ruleset = Ruleset(networks: [])
            var incoming: [(Rule, Node)] = [], outgoing: [(Rule, Node)] = []
            var hasNetworks = false
            for (key, keyNode, value) in try mapping(root, "", allowed: ["name", "description", "appliesTo", "networks", "incoming", "outgoing"]) {
                switch key {
                case "name": ruleset.name = try name(value, key)
                case "description": ruleset.description = try string(value, key)
                case "appliesTo": ruleset.appliesTo = try selector(value, key)
                case "networks":
                    hasNetworks = true
                    ruleset.networks = try networks(value, key)
                case "incoming": incoming = try rules(value, key, direction: "from")
                case "outgoing": outgoing = try rules(value, key, direction: "to")
                default: throw fail(keyNode, key, "unknown field")
                }
            }
            guard hasNetworks else { throw fail(root, "networks", "missing: a ruleset names its external networks under `networks:`") }
            guard incoming.count + outgoing.count <= RulesetLimits.rules else {
                throw fail(root, "incoming", "\(incoming.count + outgoing.count) rules; at most \(RulesetLimits.rules) allowed")
            }
            let known = ruleset.networks.map(\.name)
            for (direction, list) in [("incoming", incoming), ("outgoing", outgoing)] {
                for (index, (rule, node)) in list.enumerated() where !known.contains(rule.network) {
                    let key = direction == "incoming" ? "from" : "to"
                    throw fail(node, "\(direction)[\(index)].\(key)",
                               "unknown network '\(rule.network)'; defined networks: \(known.isEmpty ? "none" : known.joined(separator: ", "))")
                }
            }
            ruleset.incoming = incoming.map(\.0)
            ruleset.outgoing = outgoing.map(\.0)
            return ruleset
        }

        func selector(_ node: Node, _ field: String) throws -> HostSelector {
            if case .scalar(let scalar) = node {
                if scalar.style == .plain, ["", "~", "null"].contains(scalar.string) {
                    throw fail(node, field, "empty selector; write all() to select every host, or leave appliesTo out")
                }
                do {
                    return HostSelector(try Selector(parsing: scalar.string))
                } catch {
                    let line = node.mark?.line ?? 1, start = node.mark?.column ?? 1
                    let column = sourceColumn(of: error.column, in: scalar, line: line, column: start) ?? start
                    throw RulesetError(file: file, line: line, column: column, field: field, message: error.description)
                }
            }
            var selector = HostSelector()
            for (key, _, value) in try mapping(node, field, allowed: ["agents", "tags"]) {
                let items = try sequence(value, "\(field).\(key)", limit: RulesetLimits.selectors)
                let names = try items.enumerated().map { try string($1, "\(field).\(key)[\($0)]", maxLength: RulesetLimits.nameLength) }
                if key == "agents" {
                    selector.agents = names
                } else {
                    // A tag name is a key in a selector: one no host can carry would select nothing.
                    for (index, name) in names.enumerated() where !Selector.validKey(name) {
                        throw fail(items[index], "\(field).tags[\(index)]",
                                   "'\(name)' is not a tag key: 1-\(SelectorLimits.keyLength) ASCII letters, digits, '-', '_', '.' or '/'")
                    }
                    selector.tags = names
                }
            }
            return selector
        }

        /// The file column of a character of a one-line scalar, found by walking its source past
        /// the opening quote and any escapes; nil when the source does not hold the scalar on one
        /// line as expected (a folded or block scalar), and the error points at its start. File
        /// columns count Unicode scalars, as libyaml's do for every other error.
        func sourceColumn(of expressionColumn: Int, in scalar: Node.Scalar, line: Int, column: Int) -> Int? {
            guard line >= 1, line <= lines.count, column >= 1 else { return nil }
            let source = Array(lines[line - 1].unicodeScalars)
            let expression = Array(scalar.string)
            var position = column - 1
            switch scalar.style {
            case .plain: break
            case .singleQuoted, .doubleQuoted: position += 1
            default: return nil
            }
            for index in 0..<(expressionColumn - 1) {
                guard position < source.count, index < expression.count else { return nil }
                let first = source[position]
                if scalar.style == .singleQuoted, first == "'" {
                    guard position + 1 < source.count, source[position + 1] == "'" else { return nil }
                    position += 2
                } else if scalar.style == .doubleQuoted, first == "\\" {
                    guard position + 1 < source.count else { return nil }
                    let escapeLengths: [Unicode.Scalar: Int] = ["x": 4, "u": 6, "U": 10]
                    position += escapeLengths[source[position + 1]] ?? 2
                } else {
                    let scalars = Array(expression[index].unicodeScalars)
                    guard position + scalars.count <= source.count, Array(source[position..<position + scalars.count]) == scalars else { return nil }
                    position += scalars.count
                }
            }
            return position + 1
        }

        func networks(_ node: Node, _ field: String) throws -> [ExternalNetwork] {
            // `networks:` with nothing after it (a proposal whose every network is a commented-out
            // candidate) means none, as for the rule lists.
            if case .scalar(let scalar) = node, ["", "~", "null"].contains(scalar.string) { return [] }
            var result: [ExternalNetwork] = []
            var lines: [String: Int] = [:]
            for (index, item) in try sequence(node, field, limit: RulesetLimits.networks).enumerated() {
                let path = "\(field)[\(index)]"
                let network = try self.network(item, path)
                if let first = lines[network.name] {
                    throw fail(item, "\(path).name", "network '\(network.name)' is already defined on line \(first)")
                }
                lines[network.name] = item.mark?.line ?? 0
                result.append(network)
            }
            return result
        }

        func network(_ node: Node, _ field: String) throws -> ExternalNetwork {
            var network = ExternalNetwork(name: "", entries: [], services: [])
            var named = false, hasEntries = false, hasServices = false
            var servicesNodes: [Node] = []
            for (key, _, value) in try mapping(node, field, allowed: ["name", "comment", "usage", "entries", "services"]) {
                let path = "\(field).\(key)"
                switch key {
                case "name":
                    network.name = try name(value, path)
                    named = true
                case "comment": network.comment = try string(value, path)
                case "usage":
                    let text = try string(value, path)
                    guard let usage = ExternalNetwork.Usage(rawValue: text) else {
                        throw fail(value, path, "'\(text)': expected incoming, outgoing or both")
                    }
                    network.usage = usage
                case "entries":
                    hasEntries = true
                    for (index, item) in try sequence(value, path, limit: RulesetLimits.entriesPerNetwork).enumerated() {
                        switch try entry(item, "\(path)[\(index)]") {
                        case .address(let prefix): network.entries.append(prefix)
                        case .name(let pattern): network.names.append(pattern)
                        }
                    }
                case "services":
                    hasServices = true
                    servicesNodes = try sequence(value, path, limit: RulesetLimits.servicesPerNetwork)
                    network.services = try servicesNodes.enumerated().map { try service($1, "\(path)[\($0)]") }
                default: break
                }
            }
            guard named else { throw fail(node, "\(field).name", "missing: every network needs a name") }
            guard hasEntries, !network.entries.isEmpty || !network.names.isEmpty else {
                throw fail(node, "\(field).entries", "missing or empty: list CIDRs or names, e.g. [0.0.0.0/0, \"::/0\"] for anywhere, or [api.example.com]")
            }
            guard hasServices, !network.services.isEmpty else {
                throw fail(node, "\(field).services", "missing or empty: list services such as tcp/22, udp/67-68, icmp/8/0")
            }
            // A name allows the port services of its network; its ICMP services reach only the
            // address entries (an echo to a name is rare and its answer is no connection).
            if network.entries.isEmpty, !network.services.contains(where: { if case .ports = $0 { true } else { false } }) {
                throw fail(servicesNodes.first ?? node, "\(field).services",
                           "a network of names only needs a port service (tcp/443); ICMP to names is not enforced")
            }
            // ICMP of one family with entries only of the other would be installed as nothing.
            // Names answer with both families.
            let families = network.names.isEmpty ? Set(network.entries.map(\.family)) : Set(AddressFamily.allCases)
            for (index, service) in network.services.enumerated() {
                guard case .icmp(let transport, _, _) = service else { continue }
                let family: AddressFamily = transport == IPProtocolNumber.icmp ? .ipv4 : .ipv6
                guard families.contains(family) else {
                    throw fail(servicesNodes[index], "\(field).services[\(index)]",
                               "'\(service)' needs an \(family.rawValue) entry; this network has none, so it would match nothing")
                }
            }
            return network
        }

        enum Entry { case address(IPPrefix), name(NamePattern) }

        /// An address or CIDR; else, when it has a letter or a wildcard, a name pattern.
        func entry(_ node: Node, _ field: String) throws -> Entry {
            let text = try string(node, field)
            let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let address = IPAddress(String(parts[0])) else {
                let looksLikeName = text.contains { $0.isLetter || $0 == "*" } && !text.contains(":") && !text.contains("/")
                guard looksLikeName else {
                    throw fail(node, field, "'\(text)' is not an IPv4 or IPv6 address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32) nor a name (api.example.com, *.example.com)")
                }
                do { return .name(try NamePattern(parsing: text)) } catch { throw fail(node, field, error.description) }
            }
            if address.isIPv4Mapped {
                throw fail(node, field, "'\(text)' is an IPv4 address written as IPv6, which no packet matches; write it as IPv4")
            }
            guard parts.count == 2 else { return .address(IPPrefix(address)) }
            guard let length = StrictDecimal.parse(parts[1], as: Int.self), (0...address.family.bitWidth).contains(length) else {
                throw fail(node, field, "'\(text)': prefix length must be 0-\(address.family.bitWidth) for \(address.family.rawValue)")
            }
            let prefix = IPPrefix(address, length: length)
            guard prefix.address == address else {
                throw fail(node, field, "'\(text)' has host bits set; did you mean \(prefix.address)/\(length)?")
            }
            return .address(prefix)
        }

        func service(_ node: Node, _ field: String) throws -> Service {
            let text = try string(node, field)
            if let service = Service(text) { return service }
            let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            let transport = IPProtocolNumber.parse(parts[0])
            let reason: String
            if transport == nil || UInt8(parts[0]) != nil {
                reason = "unknown protocol '\(parts[0])'; use tcp, udp, sctp, dccp, udplite, icmp or icmpv6"
            } else if IPProtocolNumber.isICMP(transport!) {
                reason = "ICMP services are \(parts[0]), \(parts[0])/TYPE or \(parts[0])/TYPE/CODE with numbers 0-255"
            } else if parts.count != 2 {
                reason = "give a port or range: \(parts[0])/22 or \(parts[0])/8000-8080"
            } else {
                reason = "ports must be 0-65535, and a range low-high with low <= high"
            }
            throw fail(node, field, "'\(text)': \(reason)")
        }

        func rules(_ node: Node, _ field: String, direction key: String) throws -> [(Rule, Node)] {
            // `incoming:` with nothing after it (every rule commented out) means no rules.
            if case .scalar(let scalar) = node, ["", "~", "null"].contains(scalar.string) { return [] }
            return try sequence(node, field, limit: RulesetLimits.rules).enumerated().map { index, item in
                let path = "\(field)[\(index)]"
                var rule = Rule(network: "")
                var keyNode: Node?
                for (name, _, value) in try mapping(item, path, allowed: [key, "comment"]) {
                    if name == key {
                        rule.network = try self.name(value, "\(path).\(key)")
                        keyNode = value
                    } else {
                        rule.comment = try string(value, "\(path).comment")
                    }
                }
                guard let keyNode else { throw fail(item, "\(path).\(key)", "missing: name the network with `\(key): NETWORK`") }
                return (rule, keyNode)
            }
        }
    }
}
