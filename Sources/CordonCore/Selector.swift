/// An expression over a host's tags that picks hosts: `role == "web" && env in {"prod", "staging"}`.
/// The grammar, its errors and the choices behind them are in Docs/rulesets.md ("Selectors").
///
/// Values made by `init(parsing:)` are canonical: a chain of one operator is one flat `and`/`or`
/// (so `(a && b) && c` and `a && b && c` are one value), and sets are sorted without repeats (so
/// `{"b", "a"}` and `{"a", "b"}` are). The server compares selectors by value, and a selector
/// written two ways must not look like two. Conditions are never reordered: the text an operator
/// wrote stays recognisable in the canonical one.
public indirect enum Selector: Hashable, Sendable, CustomStringConvertible {
    /// `all()`: every host. Spelled out because an empty selector is refused: a selector must
    /// say what it picks, and an empty text is more often a mistake than a wish for the fleet.
    case all
    /// `has(key)`: the key is present, whatever its value.
    case has(String)
    /// `key == "value"`; false for a host without the key.
    case equals(String, String)
    /// `key != "value"`; true for a host without the key (it does not have that value).
    case notEquals(String, String)
    /// `key in {"a", "b"}`; false for a host without the key. The values are sorted, unique.
    case oneOf(String, [String])
    /// `agent("web-01", "web-02")`: the host's agent id is one of these (sorted, unique). It exists
    /// for the `appliesTo: {agents: [...]}` lists rulesets had before selectors: an id is not a tag,
    /// and a reserved tag key for it could collide with a tag someone already uses.
    case agent([String])
    case not(Selector)
    /// Two or more conditions, none itself an `and`.
    case and([Selector])
    /// Two or more conditions, none itself an `or`.
    case or([Selector])

    public init(parsing text: String) throws(SelectorError) {
        self = try SelectorParser.parse(text)
    }

    /// - Parameter agent: the host's agent id, for `agent(...)`; without it `agent(...)` is false.
    public func matches(_ tags: [String: String], agent: String? = nil) -> Bool {
        switch self {
        case .all: return true
        case .has(let key): return tags[key] != nil
        case .equals(let key, let value): return tags[key] == value
        case .notEquals(let key, let value): return tags[key] != value
        case .oneOf(let key, let values): return tags[key].map(values.contains) ?? false
        case .agent(let ids): return agent.map(ids.contains) ?? false
        case .not(let inner): return !inner.matches(tags, agent: agent)
        case .and(let terms): return terms.allSatisfy { $0.matches(tags, agent: agent) }
        case .or(let terms): return terms.contains { $0.matches(tags, agent: agent) }
        }
    }

    /// The tag keys the selector looks at: what an index of hosts by tag would need.
    public var keys: Set<String> {
        switch self {
        case .all, .agent: return []
        case .has(let key), .equals(let key, _), .notEquals(let key, _), .oneOf(let key, _): return [key]
        case .not(let inner): return inner.keys
        case .and(let terms), .or(let terms): return terms.reduce(into: []) { $0.formUnion($1.keys) }
        }
    }

    /// The canonical text: one space around binary operators, `, ` in lists, values quoted with
    /// only `\"` and `\\` escaped, parentheses only where precedence needs them (and around what
    /// `!` negates unless it is a call). It parses back to the same value.
    public var description: String {
        switch self {
        case .all: return "all()"
        case .has(let key): return "has(\(key))"
        case .equals(let key, let value): return "\(key) == \(Self.quoted(value))"
        case .notEquals(let key, let value): return "\(key) != \(Self.quoted(value))"
        case .oneOf(let key, let values): return "\(key) in {\(values.map(Self.quoted).joined(separator: ", "))}"
        case .agent(let ids): return "agent(\(ids.map(Self.quoted).joined(separator: ", ")))"
        case .not(let inner):
            switch inner {
            case .all, .has, .agent, .not: return "!" + inner.description
            default: return "!(\(inner.description))"
            }
        case .and(let terms):
            // Values built by hand may break the invariants; the text stays readable and safe.
            if terms.isEmpty { return "all()" }
            if terms.count == 1 { return terms[0].description }
            return terms.map { term in
                switch term {
                case .and, .or: return "(\(term.description))"
                default: return term.description
                }
            }.joined(separator: " && ")
        case .or(let terms):
            if terms.isEmpty { return "!all()" }
            if terms.count == 1 { return terms[0].description }
            return terms.map { term in
                if case .or = term { return "(\(term.description))" }
                return term.description
            }.joined(separator: " || ")
        }
    }

    static func quoted(_ value: String) -> String {
        var text = "\""
        for character in value {
            if character == "\"" || character == "\\" { text.append("\\") }
            text.append(character)
        }
        return text + "\""
    }

    /// The tag-key rule of `CordonWire.Tags.validKey`, copied: CordonWire depends on CordonCore,
    /// not the reverse. A selector can name exactly the keys a host can carry; keep the two equal.
    public static func validKey(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= SelectorLimits.keyLength
            && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) }
    }
}

/// Bounds that keep a selector cheap to parse, store and evaluate for every host of a fleet.
public enum SelectorLimits {
    /// Of the text, in UTF-8 bytes (a character can be any number of bytes).
    public static let length = 4096
    /// Of `(` and `!` together; the parser recurses once per level, so this also bounds the stack.
    public static let depth = 32
    /// Values in one `in {...}` set, ids in one `agent(...)`.
    public static let setSize = 256
    /// As for tags (`CordonWire.Tags`): a longer key or value is one no host can carry.
    public static let keyLength = 63
    public static let valueLength = 255
}

/// Where a selector went wrong: the column counts characters of the input from 1, so an editor
/// (or the ruleset parser, which adds the column of the expression) can point at it.
public struct SelectorError: Error, Hashable, Sendable, CustomStringConvertible {
    public let column: Int
    public let message: String

    public init(column: Int, message: String) {
        self.column = column
        self.message = message
    }

    public var description: String { "column \(column): \(message)" }
}

/// A recursive-descent parser over a token list; `depth` bounds the recursion.
private struct SelectorParser {
    enum Kind: Equatable {
        case word(String), string(String)
        case leftParen, rightParen, leftBrace, rightBrace, comma, not, and, or, equals, notEquals, end
    }

    struct Token {
        let kind: Kind
        let column: Int

        var shown: String {
            switch kind {
            case .word(let word): return "'\(word)'"
            case .string(let value): return Selector.quoted(value)
            case .leftParen: return "'('"
            case .rightParen: return "')'"
            case .leftBrace: return "'{'"
            case .rightBrace: return "'}'"
            case .comma: return "','"
            case .not: return "'!'"
            case .and: return "'&&'"
            case .or: return "'||'"
            case .equals: return "'=='"
            case .notEquals: return "'!='"
            case .end: return "the end"
            }
        }
    }

    var tokens: [Token]
    var position = 0
    var depth = 0

    static func parse(_ text: String) throws(SelectorError) -> Selector {
        if text.utf8.count > SelectorLimits.length {
            // The column of the character that crosses the limit.
            var bytes = 0, column = 0
            for character in text {
                column += 1
                bytes += character.utf8.count
                if bytes > SelectorLimits.length { break }
            }
            throw SelectorError(column: column, message: "longer than \(SelectorLimits.length) bytes")
        }
        var parser = SelectorParser(tokens: try lex(Array(text)))
        if parser.peek.kind == .end {
            throw SelectorError(column: 1, message: "empty selector; write all() to select every host")
        }
        let selector = try parser.or(after: nil)
        let next = parser.peek
        switch next.kind {
        case .end: return selector
        case .rightParen: throw SelectorError(column: next.column, message: "')' without a matching '('")
        default:
            throw SelectorError(column: next.column, message: "unexpected \(next.shown) after a complete condition; join conditions with '&&' or '||'")
        }
    }

    static func isWordCharacter(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || "-_./".contains(character)
    }

    static func lex(_ characters: [Character]) throws(SelectorError) -> [Token] {
        var tokens: [Token] = []
        var index = 0
        func next(is character: Character) -> Bool { index + 1 < characters.count && characters[index + 1] == character }
        while index < characters.count {
            let character = characters[index], column = index + 1
            if character.isWhitespace { index += 1; continue }
            let single: [Character: Kind] = ["(": .leftParen, ")": .rightParen, "{": .leftBrace, "}": .rightBrace, ",": .comma]
            if let kind = single[character] {
                tokens.append(Token(kind: kind, column: column))
                index += 1
            } else if character == "!" {
                let kind: Kind = next(is: "=") ? .notEquals : .not
                tokens.append(Token(kind: kind, column: column))
                index += kind == .not ? 1 : 2
            } else if character == "=" || character == "&" || character == "|" {
                guard next(is: character) else {
                    let operators: [Character: String] = ["=": "'==' (or '!=')", "&": "'&&'", "|": "'||'"]
                    throw SelectorError(column: column, message: "'\(character)' alone is not an operator; did you mean \(operators[character]!)?")
                }
                tokens.append(Token(kind: character == "=" ? .equals : character == "&" ? .and : .or, column: column))
                index += 2
            } else if character == "\"" {
                var value = ""
                index += 1
                while true {
                    guard index < characters.count else {
                        throw SelectorError(column: column, message: "unterminated string: no closing '\"'")
                    }
                    let inside = characters[index]
                    if inside == "\"" { break }
                    if inside == "\\" {
                        guard index + 1 < characters.count else {
                            throw SelectorError(column: column, message: "unterminated string: no closing '\"'")
                        }
                        let escaped = characters[index + 1]
                        guard escaped == "\"" || escaped == "\\" else {
                            throw SelectorError(column: index + 1, message: "unknown escape '\\\(escaped)'; only \\\" and \\\\ are escapes")
                        }
                        value.append(escaped)
                        index += 2
                        continue
                    }
                    // A value is shown in terminals and written into YAML files: printable only.
                    let unprintable = inside.unicodeScalars.contains {
                        [.control, .format, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
                    }
                    guard !unprintable else {
                        throw SelectorError(column: index + 1, message: "a value holds printable characters only")
                    }
                    value.append(inside)
                    index += 1
                }
                tokens.append(Token(kind: .string(value), column: column))
                index += 1
            } else if isWordCharacter(character) {
                var word = ""
                while index < characters.count, isWordCharacter(characters[index]) {
                    word.append(characters[index])
                    index += 1
                }
                tokens.append(Token(kind: .word(word), column: column))
            } else {
                let shown = character.unicodeScalars.allSatisfy { $0.properties.generalCategory != .control && $0.properties.generalCategory != .format }
                    ? "'\(character)'" : "U+" + String(character.unicodeScalars.first!.value, radix: 16, uppercase: true)
                throw SelectorError(column: column, message: "unexpected character \(shown)")
            }
        }
        tokens.append(Token(kind: .end, column: characters.count + 1))
        return tokens
    }

    var peek: Token { tokens[position] }

    mutating func take() -> Token {
        defer { if position < tokens.count - 1 { position += 1 } }
        return tokens[position]
    }

    mutating func or(after: String?) throws(SelectorError) -> Selector {
        var terms = [try and(after: after)]
        while peek.kind == .or {
            _ = take()
            terms.append(try and(after: "'||'"))
        }
        if terms.count == 1 { return terms[0] }
        return .or(terms.flatMap { term -> [Selector] in if case .or(let inner) = term { inner } else { [term] } })
    }

    mutating func and(after: String?) throws(SelectorError) -> Selector {
        var terms = [try unary(after: after)]
        while peek.kind == .and {
            _ = take()
            terms.append(try unary(after: "'&&'"))
        }
        if terms.count == 1 { return terms[0] }
        return .and(terms.flatMap { term -> [Selector] in if case .and(let inner) = term { inner } else { [term] } })
    }

    mutating func deeper(_ token: Token) throws(SelectorError) {
        depth += 1
        guard depth <= SelectorLimits.depth else {
            throw SelectorError(column: token.column, message: "nested deeper than \(SelectorLimits.depth) levels of '(' and '!'")
        }
    }

    /// `after` names what came before an operand, so a missing one says where it was expected.
    mutating func unary(after: String?) throws(SelectorError) -> Selector {
        let token = take()
        switch token.kind {
        case .not:
            try deeper(token)
            defer { depth -= 1 }
            return .not(try unary(after: "'!'"))
        case .leftParen:
            try deeper(token)
            defer { depth -= 1 }
            let inner = try or(after: "'('")
            guard peek.kind == .rightParen else {
                throw SelectorError(column: peek.column, message: "expected ')' to close the '(' at column \(token.column), found \(peek.shown)")
            }
            _ = take()
            return inner
        case .word(let word):
            if peek.kind == .leftParen { return try call(word, token) }
            return try comparison(key: word, token)
        case .string:
            throw SelectorError(column: token.column, message: "a value needs a tag key and an operator before it: KEY == \(token.shown)")
        default:
            let place = after.map { " after \($0)" } ?? ""
            throw SelectorError(column: token.column, message: "expected a condition\(place) (KEY == \"value\", has(KEY), all(), '!' or '('), found \(token.shown)")
        }
    }

    func key(_ word: String, _ token: Token) throws(SelectorError) -> String {
        guard Selector.validKey(word) else {
            throw SelectorError(column: token.column, message: "'\(word)' is not a tag key: 1-\(SelectorLimits.keyLength) ASCII letters, digits, '-', '_', '.' or '/'")
        }
        return word
    }

    mutating func value(after: String) throws(SelectorError) -> String {
        let token = take()
        guard case .string(let value) = token.kind else {
            let hint: String
            if case .word(let word) = token.kind { hint = "; values are quoted: \"\(word)\"" } else { hint = "" }
            throw SelectorError(column: token.column, message: "expected a quoted value after \(after), found \(token.shown)\(hint)")
        }
        guard !value.isEmpty else {
            throw SelectorError(column: token.column, message: "empty value; a tag's value is never empty (to test for the key, use has(KEY))")
        }
        guard value.utf8.count <= SelectorLimits.valueLength else {
            throw SelectorError(column: token.column, message: "value longer than \(SelectorLimits.valueLength) bytes; no tag can have it")
        }
        return value
    }

    mutating func comparison(key word: String, _ token: Token) throws(SelectorError) -> Selector {
        let key = try key(word, token)
        let operation = take()
        switch operation.kind {
        case .equals: return .equals(key, try value(after: "'=='"))
        case .notEquals: return .notEquals(key, try value(after: "'!='"))
        case .word("in"):
            let brace = take()
            guard brace.kind == .leftBrace else {
                throw SelectorError(column: brace.column, message: "expected '{' after 'in', found \(brace.shown); a set is {\"a\", \"b\"}")
            }
            return .oneOf(key, try list(closing: .rightBrace, "}", after: "'{'"))
        default:
            throw SelectorError(column: operation.column, message: "expected '==', '!=' or 'in' after the tag key '\(key)', found \(operation.shown)")
        }
    }

    /// Quoted values up to the closing token: sorted and unique, so equal sets are equal values.
    mutating func list(closing: Kind, _ shown: String, after: String) throws(SelectorError) -> [String] {
        if peek.kind == closing {
            throw SelectorError(column: peek.column, message: "empty \(closing == .rightBrace ? "set" : "list"); give at least one value")
        }
        var values = Set<String>()
        var count = 0
        while true {
            let column = peek.column
            values.insert(try value(after: count == 0 ? after : "','"))
            count += 1
            guard count <= SelectorLimits.setSize else {
                throw SelectorError(column: column, message: "more than \(SelectorLimits.setSize) values")
            }
            let separator = take()
            if separator.kind == closing { break }
            guard separator.kind == .comma else {
                throw SelectorError(column: separator.column, message: "expected '\(shown)' or ',', found \(separator.shown)")
            }
        }
        return values.sorted()
    }

    mutating func call(_ name: String, _ token: Token) throws(SelectorError) -> Selector {
        _ = take()  // the '('
        switch name {
        case "all":
            let close = take()
            guard close.kind == .rightParen else {
                throw SelectorError(column: close.column, message: "expected ')': all() takes nothing")
            }
            return .all
        case "has":
            let argument = take()
            guard case .word(let word) = argument.kind else {
                throw SelectorError(column: argument.column, message: "expected a tag key in has(...), found \(argument.shown); keys are not quoted")
            }
            let key = try key(word, argument)
            let close = take()
            guard close.kind == .rightParen else {
                throw SelectorError(column: close.column, message: "expected ')' after has(\(key), found \(close.shown)")
            }
            return .has(key)
        case "agent":
            return .agent(try list(closing: .rightParen, ")", after: "'agent('"))
        default:
            throw SelectorError(column: token.column, message: "unknown function '\(name)'; there are has(KEY), all() and agent(\"ID\", ...)")
        }
    }
}
