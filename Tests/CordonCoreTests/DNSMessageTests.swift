import CordonCore
import Testing

/// DNS responses built byte by byte, as a resolver would send them.
@Suite struct DNSMessageTests {
    /// A name in wire form, uncompressed.
    static func name(_ text: String) -> [UInt8] {
        text.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
    }

    static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func u32(_ v: UInt32) -> [UInt8] { u16(UInt16(v >> 16)) + u16(UInt16(v & 0xFFFF)) }

    static func record(_ owner: [UInt8], type: UInt16, ttl: UInt32, data: [UInt8]) -> [UInt8] {
        owner + u16(type) + u16(1) + u32(ttl) + u16(UInt16(data.count)) + data
    }

    /// Header (response, recursion desired and available), one question, then `answers`.
    static func response(question: String, type: UInt16 = DNSResponse.typeA, answers: [[UInt8]], flags: UInt16 = 0x8180) -> [UInt8] {
        u16(0x1234) + u16(flags) + u16(1) + u16(UInt16(answers.count)) + u16(0) + u16(0) + name(question) + u16(type) + u16(1) + answers.flatMap { $0 }
    }

    /// A pointer to the question's name, which starts right after the 12-byte header.
    static let toQuestion: [UInt8] = [0xC0, 12]

    @Test("a CNAME chain: every address carries the queried name first, then the chain, with the shortest TTL on the way")
    func cnameChain() throws {
        let bytes = Self.response(question: "API.Snapcraft.io", answers: [
            Self.record(Self.toQuestion, type: DNSResponse.typeCNAME, ttl: 300, data: Self.name("edge.cdn.example.net")),
            Self.record(Self.name("edge.cdn.example.net"), type: DNSResponse.typeA, ttl: 60, data: [192, 0, 2, 5]),
            Self.record(Self.name("edge.cdn.example.net"), type: DNSResponse.typeA, ttl: 900, data: [192, 0, 2, 6]),
        ])
        let response = try DNSResponse(parsing: bytes)
        #expect(response.question == "api.snapcraft.io" && response.id == 0x1234 && !response.truncated && response.responseCode == 0)
        let learned = response.addressNames()
        #expect(learned.map(\.address.description) == ["192.0.2.5", "192.0.2.6"])
        #expect(learned.allSatisfy { $0.names == ["api.snapcraft.io", "edge.cdn.example.net"] })
        #expect(learned.map(\.ttl) == [60, 300])
    }

    @Test("AAAA answers, and an address that does not hang off the question is not believed")
    func aaaaAndUnrelated() throws {
        let v6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let bytes = Self.response(question: "v6.example.com", type: DNSResponse.typeAAAA, answers: [
            Self.record(Self.toQuestion, type: DNSResponse.typeAAAA, ttl: 30, data: v6),
            Self.record(Self.name("bank.example.org"), type: DNSResponse.typeA, ttl: 30, data: [203, 0, 113, 66]),
        ])
        let learned = try DNSResponse(parsing: bytes).addressNames()
        #expect(learned.map(\.address.description) == ["2001:db8::1"])
        #expect(learned.first?.names == ["v6.example.com"])
    }

    @Test("the TC bit is read: a truncated UDP answer is the cue that TCP follows")
    func truncatedFlag() throws {
        let response = try DNSResponse(parsing: Self.response(question: "many.example.com", answers: [], flags: 0x8380))
        #expect(response.truncated && response.addressNames().isEmpty)
    }

    @Test("malformed input is an error, never a trap or a guess")
    func malformed() {
        let good = Self.response(question: "a.example.com", answers: [Self.record(Self.toQuestion, type: DNSResponse.typeA, ttl: 5, data: [192, 0, 2, 1])])
        // Every prefix of a valid message is short, not a crash.
        for length in 0..<good.count {
            #expect(throws: DNSResponse.ParseError.self) { try DNSResponse(parsing: Array(good[..<length])) }
        }
        // A query is not a response.
        var query = good
        query[2] &= 0x7F
        #expect(throws: DNSResponse.ParseError.notAResponse) { try DNSResponse(parsing: query) }
        // A pointer to itself or forwards would loop or read ahead.
        let selfPointer = Self.response(question: "a.example.com", answers: [Self.record([0xC0, UInt8(12 + Self.name("a.example.com").count + 4)],
                                                                                            type: DNSResponse.typeA, ttl: 5, data: [192, 0, 2, 1])])
        #expect(throws: DNSResponse.ParseError.self) { try DNSResponse(parsing: selfPointer) }
        // A label holding a dot or a control character is not a host name.
        var dotted = good
        dotted[13] = UInt8(ascii: ".")
        #expect(throws: DNSResponse.ParseError.self) { try DNSResponse(parsing: dotted) }
    }

    @Test("a CNAME loop ends the chain instead of spinning")
    func cnameLoop() throws {
        let bytes = Self.response(question: "a.example.com", answers: [
            Self.record(Self.toQuestion, type: DNSResponse.typeCNAME, ttl: 60, data: Self.name("b.example.com")),
            Self.record(Self.name("b.example.com"), type: DNSResponse.typeCNAME, ttl: 60, data: Self.name("a.example.com")),
            Self.record(Self.name("b.example.com"), type: DNSResponse.typeA, ttl: 60, data: [192, 0, 2, 9]),
        ])
        let learned = try DNSResponse(parsing: bytes).addressNames()
        #expect(learned.map(\.names) == [["a.example.com", "b.example.com"]])
    }
}
