import CordonCore
import Testing

@Suite struct SelectorTests {
    func parse(_ text: String) throws -> Selector { try Selector(parsing: text) }

    func failure(_ text: String) throws -> SelectorError {
        try #require(throws: SelectorError.self) { try Selector(parsing: text) }
    }

    let web: [String: String] = ["role": "web", "env": "prod", "pci": "yes"]
    let db: [String: String] = ["role": "db", "env": "dev"]
    let bare: [String: String] = [:]

    @Test("== and != against a host with and without the key")
    func comparisons() throws {
        let equals = try parse(#"role == "web""#)
        #expect(equals == .equals("role", "web"))
        #expect(equals.matches(web) && !equals.matches(db) && !equals.matches(bare))
        let differs = try parse(#"env != "dev""#)
        #expect(differs == .notEquals("env", "dev"))
        #expect(differs.matches(web) && !differs.matches(db))
        #expect(differs.matches(bare), "a host without the key does not have that value")
    }

    @Test("in is membership of a set; a host without the key is in no set")
    func sets() throws {
        let set = try parse(#"env in {"staging","prod"}"#)
        #expect(set == .oneOf("env", ["prod", "staging"]))
        #expect(set.matches(web) && set.matches(["env": "staging"]))
        #expect(!set.matches(db) && !set.matches(bare) && !set.matches(["env": "prod-2"]))
        let notIn = try parse(#"!(env in {"prod"})"#)
        #expect(notIn == .not(.oneOf("env", ["prod"])))
        #expect(!notIn.matches(web) && notIn.matches(db) && notIn.matches(bare))
    }

    @Test("has() is presence whatever the value; all() is every host; agent() is the host's id")
    func calls() throws {
        let has = try parse("has(pci)")
        #expect(has == .has("pci"))
        #expect(has.matches(web) && has.matches(["pci": "no"]) && !has.matches(db))
        #expect(try parse("all()") == .all)
        #expect(try parse("all()").matches(bare))
        let agent = try parse(#"agent("web-02", "web-01")"#)
        #expect(agent == .agent(["web-01", "web-02"]))
        #expect(agent.matches(bare, agent: "web-01") && !agent.matches(bare, agent: "web-03"))
        #expect(!agent.matches(web), "no agent id, no match")
    }

    @Test("! && || and parentheses; precedence ! over && over ||")
    func precedence() throws {
        let mixed = try parse(#"has(a) || has(b) && has(c)"#)
        #expect(mixed == .or([.has("a"), .and([.has("b"), .has("c")])]))
        #expect(mixed.matches(["a": "1"]), "a alone is enough: && binds tighter")
        #expect(!mixed.matches(["b": "1"]) && mixed.matches(["b": "1", "c": "1"]))
        let grouped = try parse(#"(has(a) || has(b)) && has(c)"#)
        #expect(grouped == .and([.or([.has("a"), .has("b")]), .has("c")]))
        #expect(!grouped.matches(["a": "1"]) && grouped.matches(["a": "1", "c": "1"]))
        let negated = try parse(#"!has(a) && has(b)"#)
        #expect(negated == .and([.not(.has("a")), .has("b")]))
        #expect(negated.matches(["b": "1"]) && !negated.matches(["a": "1", "b": "1"]))
        let comparison = try parse(#"!role == "web""#)
        #expect(comparison == .not(.equals("role", "web")), "a comparison is one operand of !")
        #expect(try parse("!!has(a)") == .not(.not(.has("a"))))
        let realistic = try parse(#"role == "web" && env in {"prod", "staging"} && !has(pci) || has(legacy)"#)
        #expect(realistic.matches(["role": "web", "env": "staging"]) && realistic.matches(["legacy": "1"]))
        #expect(!realistic.matches(web) && !realistic.matches(["role": "web", "env": "dev"]))
    }

    @Test("a chain of one operator is one flat value, however it is grouped")
    func flattening() throws {
        let flat = Selector.and([.has("a"), .has("b"), .has("c")])
        #expect(try parse("has(a) && has(b) && has(c)") == flat)
        #expect(try parse("(has(a) && has(b)) && has(c)") == flat)
        #expect(try parse("has(a) && (has(b) && has(c))") == flat)
        #expect(try parse("has(a) || (has(b) || has(c))") == .or([.has("a"), .has("b"), .has("c")]))
        #expect(try parse(#"k in {"b", "a", "b"}"#) == parse(#"k in {"a","b"}"#))
        #expect(try parse("has(a) && has(b)") != parse("has(b) && has(a)"), "conditions are not reordered")
    }

    @Test("values: quoted, with \\\" and \\\\ escapes, any printable text")
    func values() throws {
        let selector = try parse(#"note == "say \"hi\" C:\\temp""#)
        #expect(selector == .equals("note", #"say "hi" C:\temp"#))
        #expect(selector.description == #"note == "say \"hi\" C:\\temp""#)
        #expect(try parse(#"city == "Zürich && Genève""#) == .equals("city", "Zürich && Genève"), "operators inside quotes are text")
        #expect(try parse(#"k8s.io/zone-name_1 == "x""#) == .equals("k8s.io/zone-name_1", "x"), "the key characters of Tags")
    }

    @Test("canonical text: normalised spacing, quoting, grouping and set order", arguments: [
        (#"role=="web"&&env   in{"staging" ,"prod"}"#, #"role == "web" && env in {"prod", "staging"}"#),
        ("  has( pci )  ", "has(pci)"),
        ("((has(a)))", "has(a)"),
        ("(has(a) || has(b)) && has(c)", "(has(a) || has(b)) && has(c)"),
        ("has(a) || (has(b) && has(c))", "has(a) || has(b) && has(c)"),
        ("(has(a) && has(b)) && has(c)", "has(a) && has(b) && has(c)"),
        (#"!(role=="web")"#, #"!(role == "web")"#),
        (#"!role=="web""#, #"!(role == "web")"#),
        ("! ! has(a)", "!!has(a)"),
        ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        (#"agent( "b","a" )"#, #"agent("a", "b")"#),
        ("all( )", "all()"),
    ])
    func canonicalText(input: String, canonical: String) throws {
        let selector = try parse(input)
        #expect(selector.description == canonical)
        #expect(try parse(selector.description) == selector, "the canonical text parses back to the same value")
    }

    @Test("keys names every tag key, and no agent ids or values")
    func keys() throws {
        let selector = try parse(#"role == "web" && (!has(pci) || env in {"x"}) && agent("role2") && tier != "role3""#)
        #expect(selector.keys == ["role", "pci", "env", "tier"])
        #expect(try parse("all()").keys.isEmpty)
    }

    @Test("each error names its column", arguments: [
        (#"role == "web" # x"#, 15, "unexpected character '#'"),
        (#"role == "web"#, 9, "unterminated string"),
        (#"role == "web\"#, 9, "unterminated string"),
        (#"role == "web" &&"#, 17, "expected a condition after '&&'"),
        (#"has(a) || && has(b)"#, 11, "expected a condition after '||'"),
        ("!", 2, "expected a condition after '!'"),
        ("role ==", 8, "expected a quoted value after '=='"),
        ("role != web", 9, "values are quoted: \"web\""),
        (#"(role == "web""#, 15, "expected ')' to close the '(' at column 1"),
        (#"(has(a) || (has(b) has(c)))"#, 20, "expected ')' to close the '(' at column 12"),
        (#"role == "web")"#, 14, "')' without a matching '('"),
        (#"env in "prod""#, 8, "expected '{' after 'in'"),
        ("env in {}", 9, "empty set"),
        (#"env in {"a" "b"}"#, 13, "expected '}' or ','"),
        (#"env in {"a","#, 13, "expected a quoted value after ','"),
        (#"Rôle == "x""#, 1, "'Rôle' is not a tag key"),
        (#"has(bad key)"#, 9, "expected ')' after has(bad"),
        (#"role == "web" env == "x""#, 15, "unexpected 'env' after a complete condition"),
        ("", 1, "empty selector; write all()"),
        ("   \n ", 1, "empty selector"),
        (#"role = "web""#, 6, "'=' alone is not an operator"),
        ("has(a) & has(b)", 8, "'&' alone"),
        ("has(a) | has(b)", 8, "'|' alone"),
        ("pick(a)", 1, "unknown function 'pick'"),
        (#"has("pci")"#, 5, "keys are not quoted"),
        ("all(x)", 5, "all() takes nothing"),
        (#"role == """#, 9, "empty value"),
        (#"role == "a\nb""#, 11, "unknown escape '\\n'"),
        ("role == \"a\u{7}b\"", 11, "printable characters only"),
        (#""web""#, 1, "needs a tag key and an operator before it"),
        ("agent()", 7, "empty list"),
        ("role", 5, "expected '==', '!=' or 'in' after the tag key 'role'"),
        // Columns count characters: "é" written as e + combining accent is one.
        ("city == \"Gene\u{300}ve\" &&", 20, "expected a condition after '&&'"),
        ("📦 == \"x\"", 1, "unexpected character '📦'"),
    ])
    func errors(text: String, column: Int, message: String) throws {
        let error = try failure(text)
        #expect(error.column == column, "\(error)")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.description == "column \(column): \(error.message)")
    }

    @Test("a key longer than a tag key may be is refused where it starts")
    func longKey() throws {
        let key = String(repeating: "k", count: SelectorLimits.keyLength)
        #expect(try parse("has(\(key))") == .has(key))
        let error = try failure("has(a) && has(\(key)k)")
        #expect(error.column == 15 && error.message.contains("is not a tag key"), "\(error)")
        let value = String(repeating: "v", count: SelectorLimits.valueLength)
        #expect(try parse(#"k == "\#(value)""#) == .equals("k", value))
        #expect(try failure(#"k == "\#(value)v""#).column == 6)
    }

    @Test("nesting is bounded: an error at the first level too deep, never a stack overflow")
    func depth() throws {
        let limit = SelectorLimits.depth
        let deepest = String(repeating: "(", count: limit) + "has(a)" + String(repeating: ")", count: limit)
        #expect(try parse(deepest) == .has("a"))
        let parens = try failure(String(repeating: "(", count: limit + 1) + "has(a)" + String(repeating: ")", count: limit + 1))
        #expect(parens.column == limit + 1 && parens.message.contains("nested deeper than \(limit)"), "\(parens)")
        let nots = try failure(String(repeating: "!", count: 2000) + "has(a)")
        #expect(nots.column == limit + 1 && nots.message.contains("nested deeper"), "\(nots)")
        let mixed = try failure(String(repeating: "!(", count: 1000) + "has(a)")
        #expect(mixed.column == limit + 1, "\(mixed)")
        // 10,000 levels is over the length limit too; whichever is met, it is an error.
        let huge = try failure(String(repeating: "(", count: 10_000))
        #expect(huge.column == SelectorLimits.length + 1 && huge.message.contains("longer than"), "\(huge)")
    }

    @Test("the text is bounded in bytes; the error points at the character that crosses the limit")
    func length() throws {
        // "has(a)" then " || has(a)" 409 times is exactly 4,096 bytes.
        let fits = "has(a)" + String(repeating: " || has(a)", count: (SelectorLimits.length - 6) / 10)
        #expect(fits.utf8.count == SelectorLimits.length)
        guard case .or(let terms) = try parse(fits) else { Issue.record("expected an or"); return }
        #expect(terms.count == 410)
        let error = try failure(fits + " ")
        #expect(error.column == SelectorLimits.length + 1 && error.message == "longer than \(SelectorLimits.length) bytes")
        // Two-byte characters: the 2,049th crosses it.
        let wide = try failure(String(repeating: "é", count: 3000))
        #expect(wide.column == SelectorLimits.length / 2 + 1, "\(wide)")
    }

    @Test("a set holds at most the limit of values; the error points at the first one too many")
    func setSize() throws {
        let values = (0..<SelectorLimits.setSize).map { "\"v\($0)\"" }
        guard case .oneOf(_, let parsed) = try parse("k in {\(values.joined(separator: ","))}") else {
            Issue.record("expected a set"); return
        }
        #expect(parsed.count == SelectorLimits.setSize)
        let text = "k in {\(values.joined(separator: ",")),\"extra\"}"
        let error = try failure(text)
        let column = text.distance(from: text.startIndex, to: text.range(of: "\"extra\"")!.lowerBound) + 1
        #expect(error.column == column && error.message.contains("more than \(SelectorLimits.setSize) values"), "\(error)")
    }

    @Test("the key rule is the one of CordonWire.Tags")
    func keyRule() {
        for key in ["web", "Role", "k8s.io/zone", "a-b_c", "1", String(repeating: "a", count: 63)] {
            #expect(Selector.validKey(key), "\(key)")
        }
        for key in ["", "a b", "a=b", "rôle", "a:b", String(repeating: "a", count: 64)] {
            #expect(!Selector.validKey(key), "\(key)")
        }
    }
}

@Suite struct SelectorInRulesetTests {
    static func ruleset(appliesTo: String) -> String {
        """
        name: web
        \(appliesTo)
        networks:
          - name: ssh
            entries: [198.51.100.0/24]
            services: [tcp/22]
        incoming:
          - from: ssh
        """
    }

    func failure(_ appliesTo: String) throws -> RulesetError {
        try #require(throws: RulesetError.self) { try RulesetParser.parse(Self.ruleset(appliesTo: appliesTo), file: "web.yaml") }
    }

    @Test("the lists read as before, and as the selector they mean")
    func lists() throws {
        let ruleset = try RulesetParser.parse(Self.ruleset(appliesTo: "appliesTo:\n  agents: [web-02, web-01]\n  tags: [web, prod]"), file: "web.yaml")
        let selector = ruleset.appliesTo
        #expect(selector == HostSelector(agents: ["web-02", "web-01"], tags: ["web", "prod"]))
        #expect(selector.expression == nil)
        #expect(selector.selector.description == #"agent("web-01", "web-02") || has(web) && has(prod)"#)
        #expect(selector.matches(agent: "web-01", tags: [String: String]()))
        #expect(selector.matches(agent: "web-09", tags: ["web": "1", "prod": "eu"]))
        #expect(!selector.matches(agent: "web-09", tags: ["web": "1"]))
        #expect(selector.matches(agent: "web-09", tags: Set(["web", "prod"])))
        #expect(!selector.matches(agent: "web-09", tags: Set(["web"])))
        #expect(HostSelector(tags: ["web"]).selector == .has("web"))
        #expect(HostSelector(agents: ["a"]).selector == .agent(["a"]))
        #expect(!HostSelector(agents: ["a"]).matches(agent: "b", tags: Set<String>()), "agents alone: no tags part matches everyone")
        #expect(HostSelector().selector == .all && HostSelector().matches(agent: "x", tags: Set<String>()))
    }

    @Test("an expression, in each YAML scalar style, is a selector", arguments: [
        #"appliesTo: 'role == "web" && env == "prod"'"#,
        #"appliesTo: "role == \"web\" && env == \"prod\"""#,
        #"appliesTo: role == "web" && env == "prod""#,
        "appliesTo: >-\n  role == \"web\"\n  && env == \"prod\"",
    ])
    func expression(line: String) throws {
        let ruleset = try RulesetParser.parse(Self.ruleset(appliesTo: line), file: "web.yaml")
        #expect(ruleset.appliesTo == HostSelector(.and([.equals("role", "web"), .equals("env", "prod")])))
        #expect(!ruleset.appliesTo.isEmpty)
        #expect(ruleset.appliesTo.matches(agent: "x", tags: ["role": "web", "env": "prod"]))
        #expect(!ruleset.appliesTo.matches(agent: "x", tags: ["role": "web", "env": "dev"]))
    }

    @Test("RulesetText writes back the form it read", arguments: [
        #"appliesTo: 'role == "web" && (env in {"prod","staging"} || has(pci))'"#,
        #"appliesTo: "note == \"it's \\\\ \\\"odd\\\"\"""#,
        "appliesTo:\n  agents: [web-01]\n  tags: [web, prod]",
        "appliesTo:\n  tags: [web]",
        "",
    ])
    func roundTrip(line: String) throws {
        let ruleset = try RulesetParser.parse(Self.ruleset(appliesTo: line), file: "web.yaml")
        let text = RulesetText.render(ruleset)
        let again = try RulesetParser.parse(text, file: "web.yaml")
        #expect(again == ruleset, "\(text)")
        #expect(again.appliesTo.expression == ruleset.appliesTo.expression && again.appliesTo.tags == ruleset.appliesTo.tags)
        if let expression = ruleset.appliesTo.expression {
            #expect(text.contains("appliesTo: '\(expression.description.replacingOccurrences(of: "'", with: "''"))'\n"), "\(text)")
        }
    }

    @Test("an expression's error names the file, the line, the column in the file and the one in the expression", arguments: [
        // `appliesTo: '` is 12 characters: the expression starts at column 13.
        (#"appliesTo: 'env in {"prod" "dev"}'"#, 28, "column 16: expected '}' or ','"),
        // Escapes take more characters in the file than in the expression.
        (#"appliesTo: "role == \"web\" &&""#, 31, "column 17: expected a condition after '&&'"),
        (#"appliesTo: 'k == "it''s" x'"#, 26, "column 13: unexpected 'x'"),
        (#"appliesTo: role = "web""#, 17, "column 6: '=' alone"),
        // File columns count Unicode scalars (as libyaml's); the expression's count characters.
        ("appliesTo: 'city == \"Gene\u{300}ve\" x'", 31, "column 18: unexpected 'x'"),
        // Folded over lines: the error points at where the expression starts.
        ("appliesTo: >-\n  has(a)\n  && (", 12, "column 12: expected a condition after '('"),
    ])
    func expressionErrors(line: String, column: Int, message: String) throws {
        let error = try failure(line)
        #expect(error.file == "web.yaml" && error.line == 2 && error.field == "appliesTo", "\(error)")
        #expect(error.column == column, "\(error)")
        #expect(error.message.hasPrefix(message), "\(error)")
    }

    @Test("an empty appliesTo is refused: all() says every host")
    func empty() throws {
        for line in ["appliesTo:", "appliesTo: ''", "appliesTo: ~"] {
            let error = try failure(line)
            #expect(error.line == 2 && error.message.contains("empty selector"), "\(line): \(error)")
        }
        let all = try RulesetParser.parse(Self.ruleset(appliesTo: "appliesTo: all()"), file: "web.yaml")
        #expect(all.appliesTo == HostSelector(.all) && all.appliesTo.matches(agent: "x", tags: Set<String>()))
    }

    @Test("a listed tag must be a tag key, as in a selector")
    func listedTagIsAKey() throws {
        let error = try failure("appliesTo:\n  tags: [web, \"web prod\"]")
        #expect(error.line == 3 && error.column == 15 && error.field == "appliesTo.tags[1]", "\(error)")
        #expect(error.message.contains("is not a tag key"))
    }
}
