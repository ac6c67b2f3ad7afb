import CordonCore
import Testing

@Suite struct NamePatternTests {
    func pattern(_ text: String) throws -> NamePattern { try NamePattern(parsing: text) }

    @Test("an exact name matches itself only; case and a final dot do not matter")
    func exact() throws {
        let p = try pattern("API.Snapcraft.io.")
        #expect(p == .exact("api.snapcraft.io") && p.description == "api.snapcraft.io")
        #expect(p.matches("api.snapcraft.io"))
        #expect(!p.matches("x.api.snapcraft.io") && !p.matches("snapcraft.io") && !p.matches("api.snapcraft.io.evil.example"))
    }

    @Test("*. is exactly one label: a.example.com, not example.com nor a.b.example.com")
    func oneLabel() throws {
        let p = try pattern("*.example.com")
        #expect(p.matches("a.example.com") && p.matches("xn--bcher-kva.example.com"))
        #expect(!p.matches("example.com") && !p.matches("a.b.example.com") && !p.matches("aexample.com") && !p.matches("a.example.com.evil.net"))
    }

    @Test("**. is any depth below the domain, and not the domain itself")
    func anyDepth() throws {
        let p = try pattern("**.s3.amazonaws.com")
        #expect(p.matches("bucket.s3.amazonaws.com") && p.matches("a.b.c.s3.amazonaws.com"))
        #expect(!p.matches("s3.amazonaws.com") && !p.matches("evils3.amazonaws.com") && !p.matches("amazonaws.com"))
    }

    @Test("bad patterns are refused with the reason", arguments: [
        ("*.com", "at least two labels"), ("**.", "at least two labels"), ("a.*.example.com", "whole first label"),
        ("ex*ample.com", "whole first label"), ("a..example.com", "empty label"), (".example.com", "empty label"),
        ("-a.example.com", "starts or ends with '-'"), ("bücher.example.com", "punycode"), ("a b.example.com", "other than letters"),
        ("localhost", "fully qualified"), ("192.0.2.1", "is a number"), ("", "empty label"),
    ])
    func invalid(text: String, reason: String) {
        #expect {
            try NamePattern(parsing: text)
        } throws: { error in
            (error as? NamePattern.Invalid)?.description.contains(reason) == true
        }
    }

    @Test("length limits: a label of 64 and a name over 253 characters are refused")
    func lengths() throws {
        #expect(throws: NamePattern.Invalid.self) { try NamePattern(parsing: String(repeating: "a", count: 64) + ".example.com") }
        let long = (0..<50).map { _ in "abcd" }.joined(separator: ".") + ".example.com"
        #expect(throws: NamePattern.Invalid.self) { try NamePattern(parsing: long) }
        _ = try pattern(String(repeating: "a", count: 63) + ".example.com")
    }
}
