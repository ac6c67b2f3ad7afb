/// A DNS response as far as Cordon needs it: which name was asked, and the addresses and CNAMEs
/// that answered it, with their TTLs. Parsed from bytes the network handed over, so every read
/// is bounds-checked and a compression pointer may only point backwards (no loops, no reads past
/// the message); anything malformed is an error, never a guess.
public struct DNSResponse: Equatable, Sendable {
    public var id: UInt16
    /// TC: the answer was cut to fit UDP; the client retries over TCP, whose answer is the one to learn.
    public var truncated: Bool
    public var responseCode: UInt8
    /// The question's name, lower case, without the final dot; nil when the response has none.
    public var question: String?
    public var questionType: UInt16?
    public var answers: [DNSRecord]

    /// The records of the answer section Cordon learns from.
    public struct DNSRecord: Equatable, Sendable {
        public enum Value: Equatable, Sendable {
            case address(IPAddress)
            case cname(String)
        }
        public var name: String
        public var ttl: UInt32
        public var value: Value

        public init(name: String, ttl: UInt32, value: Value) {
            self.name = name
            self.ttl = ttl
            self.value = value
        }
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case short(at: Int)
        case notAResponse
        case badName(at: Int, String)

        public var description: String {
            switch self {
            case .short(let at): "the message ends early (byte \(at))"
            case .notAResponse: "a query, not a response"
            case .badName(let at, let why): "a malformed name at byte \(at): \(why)"
            }
        }
    }

    public static let typeA: UInt16 = 1, typeCNAME: UInt16 = 5, typeAAAA: UInt16 = 28
    static let classIN: UInt16 = 1

    /// `bytes`: one DNS message (over TCP, without its two-byte length).
    public init(parsing bytes: [UInt8]) throws(ParseError) {
        var reader = Reader(bytes: bytes)
        id = try reader.u16()
        let flags = try reader.u16()
        guard flags & 0x8000 != 0 else { throw .notAResponse }
        truncated = flags & 0x0200 != 0
        responseCode = UInt8(flags & 0x000F)
        let questions = try reader.u16(), answerCount = try reader.u16()
        _ = try reader.u16()   // authority
        _ = try reader.u16()   // additional
        question = nil
        questionType = nil
        for index in 0..<Int(questions) {
            let name = try reader.name()
            let type = try reader.u16()
            _ = try reader.u16()   // class
            if index == 0 {
                question = name
                questionType = type
            }
        }
        answers = []
        for _ in 0..<Int(answerCount) {
            let name = try reader.name()
            let type = try reader.u16(), recordClass = try reader.u16()
            let ttl = try reader.u32()
            let length = Int(try reader.u16())
            let end = reader.offset + length
            guard end <= bytes.count else { throw .short(at: bytes.count) }
            if recordClass == Self.classIN {
                switch type {
                case Self.typeA where length == 4, Self.typeAAAA where length == 16:
                    if let address = IPAddress(bytes: bytes[reader.offset..<end]) {
                        answers.append(DNSRecord(name: name, ttl: ttl, value: .address(address)))
                    }
                case Self.typeCNAME:
                    var inner = reader
                    let target = try inner.name()
                    guard inner.offset == end else { throw .badName(at: reader.offset, "the CNAME does not fill its record") }
                    answers.append(DNSRecord(name: name, ttl: ttl, value: .cname(target)))
                default:
                    break
                }
            }
            reader.offset = end
        }
    }

    /// Each answered address with the names it answers: the question first, then the CNAME chain
    /// that led to it, and the shortest TTL along that chain (the answer is only as fresh as its
    /// weakest link). Records that do not hang off the question (unrelated additional data a
    /// resolver put in the answer section) are not believed.
    public func addressNames() -> [(address: IPAddress, names: [String], ttl: UInt32)] {
        guard let question else { return [] }
        var chain = [question]
        var ttl = UInt32.max
        var current = question
        // A CNAME chain longer than 16 links is a loop or an attack; resolvers stop earlier.
        for _ in 0..<16 {
            guard let link = answers.first(where: { $0.name == current && { if case .cname = $0.value { true } else { false } }($0) }),
                  case .cname(let target) = link.value, !chain.contains(target) else { break }
            chain.append(target)
            ttl = min(ttl, link.ttl)
            current = target
        }
        var result: [(address: IPAddress, names: [String], ttl: UInt32)] = []
        for record in answers where chain.contains(record.name) {
            if case .address(let address) = record.value, !result.contains(where: { $0.address == address }) {
                result.append((address, chain, min(ttl, record.ttl)))
            }
        }
        return result
    }
}

/// Reads a DNS message front to back.
private struct Reader {
    let bytes: [UInt8]
    var offset = 0

    mutating func u16() throws(DNSResponse.ParseError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw .short(at: bytes.count) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func u32() throws(DNSResponse.ParseError) -> UInt32 {
        UInt32(try u16()) << 16 | UInt32(try u16())
    }

    /// A name, lower case, without the final dot; "" for the root. Follows compression pointers,
    /// each to an earlier offset than the last, so reading ends.
    mutating func name() throws(DNSResponse.ParseError) -> String {
        var labels: [String] = []
        var position = offset
        var resumeAt: Int?
        var lowestPointer = offset
        var length = 0
        while true {
            guard position < bytes.count else { throw .short(at: bytes.count) }
            let byte = bytes[position]
            switch byte & 0xC0 {
            case 0xC0:
                guard position + 1 < bytes.count else { throw .short(at: bytes.count) }
                let target = Int(byte & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < lowestPointer else { throw .badName(at: position, "a compression pointer that does not point backwards") }
                if resumeAt == nil { resumeAt = position + 2 }
                lowestPointer = target
                position = target
            case 0x00:
                let count = Int(byte)
                if count == 0 {
                    offset = resumeAt ?? position + 1
                    return labels.joined(separator: ".")
                }
                guard position + 1 + count <= bytes.count else { throw .short(at: bytes.count) }
                length += count + 1
                guard length <= 255 else { throw .badName(at: position, "longer than 255 bytes") }
                let label = bytes[(position + 1)...(position + count)]
                guard label.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ".") }) else {
                    throw .badName(at: position, "a label with a character a host name cannot hold")
                }
                labels.append(String(decoding: label.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self))
                position += 1 + count
            default:
                throw .badName(at: position, "an unknown label type")
            }
        }
    }
}
