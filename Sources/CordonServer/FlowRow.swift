import CordonCore
import NIOCore
import PostgresNIO

/// How a host's flow aggregate is kept in `host_flows`, and read back. A fleet propose or review
/// reads every row of a tier (2M for 1,000 hosts), so the typed read goes from the wire's bytes to
/// a `FleetFlow` with no `String`, array or record made per row; the record read, for the few
/// rows a host's flows or a rollout's regressions need, splits a text.
enum FlowRow {
    /// The aggregate's key: the nine fields that make it one, '|' between, '-' for none.
    static func key(_ f: FlowRecord) -> String {
        func text<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "-" }
        return [f.direction.rawValue, f.protocol, f.localAddress, text(f.localPort), f.remoteAddress, text(f.remotePort),
                text(f.icmpType), text(f.icmpCode), f.verdict.rawValue].joined(separator: "|")
    }

    /// The names space-separated ('' for none, most rows): each is a DNS name (checked at upload).
    static func names(_ names: [String]) -> String { names.joined(separator: " ") }
    static func names(_ text: String) -> [String] { text.isEmpty ? [] : text.utf8.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) } }

    /// A row as one text, the key's nine fields then the first and last sighting, the three
    /// totals and the names, '|' between: one column to decode a row, not seven (decoding each
    /// column took a generic lookup).
    static let line = "flow_key || '|' || first_seen || '|' || last_seen || '|' || connections || '|' || packets || '|' || bytes || '|' || remote_names"

    /// A line's fifteen fields, sharing the line's storage.
    static func fields(_ line: String) -> [Substring]? {
        let fields = line.utf8.split(separator: UInt8(ascii: "|"), omittingEmptySubsequences: false).map { Substring($0) }
        return fields.count == 15 ? fields : nil
    }

    private static func number<T: FixedWidthInteger>(_ field: Substring) -> T? { field == "-" ? nil : T(field) }

    /// A line back into the record it was stored from; nil for a row this server did not write.
    static func record(_ line: String) -> FlowRecord? {
        guard let f = fields(line), let direction = Direction(rawValue: String(f[0])), let verdict = FlowVerdict(rawValue: String(f[8])),
              let connections = UInt64(f[11]), let packets = UInt64(f[12]), let bytes = UInt64(f[13]) else { return nil }
        return FlowRecord(direction: direction, protocol: String(f[1]), family: f[2].utf8.contains(UInt8(ascii: ":")) ? .ipv6 : .ipv4,
                          localAddress: String(f[2]), localPort: number(f[3]), remoteAddress: String(f[4]), remotePort: number(f[5]),
                          icmpType: number(f[6]), icmpCode: number(f[7]), connections: connections, packets: packets, bytes: bytes,
                          firstSeen: String(f[9]), lastSeen: String(f[10]), verdict: verdict, remoteNames: Self.names(String(f[14])))
    }

    /// A line's bytes straight to a typed flow, the same flow `FleetFlow(record(line))` gives;
    /// nil for a line that does not read as one.
    static func flow(utf8 line: UnsafeBufferPointer<UInt8>) -> FleetFlow? {
        var reader = Reader()
        return reader.flow(utf8: line)
    }

    /// Lines joined by newlines into typed flows; lines that do not read are left out.
    static func flows(utf8 text: UnsafeBufferPointer<UInt8>) -> [FleetFlow] {
        var reader = Reader(), flows: [FleetFlow] = [], start = 0
        for end in 0...text.count where end == text.count || text[end] == UInt8(ascii: "\n") {
            if end > start, let flow = reader.flow(utf8: UnsafeBufferPointer(rebasing: text[start..<end])) { flows.append(flow) }
            start = end + 1
        }
        return flows
    }

    /// Reads a host's lines one after the other, each field where it lies. The local address is
    /// the host's own on nearly every line: it is parsed once and compared by bytes after that.
    struct Reader {
        private var lastLocal: (text: [UInt8], address: IPAddress)?

        mutating func flow(utf8 line: UnsafeBufferPointer<UInt8>) -> FleetFlow? {
            var fields = Fields(line)
            guard let direction = fields.next().flatMap(FlowRow.direction), let transport = fields.next().flatMap(IPProtocolNumber.parse(utf8:)),
                  let local = fields.next().flatMap({ self.local(utf8: $0) }), let localPort = fields.optional(UInt16.self),
                  let remote = fields.next().flatMap(IPPrefix.init(utf8:)), let remotePort = fields.optional(UInt16.self),
                  let icmpType = fields.optional(UInt8.self), let icmpCode = fields.optional(UInt8.self),
                  let verdict = fields.next().flatMap(FlowRow.verdict),
                  let firstSeen = fields.next().flatMap(TimeText.unix(utf8:)), let lastSeen = fields.next().flatMap(TimeText.unix(utf8:)),
                  let connections = fields.number(UInt64.self), let packets = fields.number(UInt64.self), let bytes = fields.number(UInt64.self),
                  let names = fields.next(), fields.atEnd else { return nil }
            let key = FlowKey(direction: direction, transport: transport, local: local, remote: remote,
                              port: direction == .inbound ? localPort : remotePort, icmpType: icmpType, icmpCode: icmpCode, verdict: verdict)
            return FleetFlow(key: key, stats: FlowStats(connections: connections, packets: packets, bytes: bytes, firstSeen: firstSeen, lastSeen: lastSeen),
                             names: names.isEmpty ? [] : names.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) })
        }

        private mutating func local(utf8 text: UnsafeBufferPointer<UInt8>) -> IPAddress? {
            if let lastLocal, lastLocal.text.elementsEqual(text) { return lastLocal.address }
            guard let address = IPAddress(utf8: text) else { return nil }
            lastLocal = (Array(text), address)
            return address
        }
    }

    static let directions = Direction.allCases.map { (Array($0.rawValue.utf8), $0) }
    static let verdicts = FlowVerdict.allCases.map { (Array($0.rawValue.utf8), $0) }
    static func direction(_ field: UnsafeBufferPointer<UInt8>) -> Direction? { directions.first { $0.0.elementsEqual(field) }?.1 }
    static func verdict(_ field: UnsafeBufferPointer<UInt8>) -> FlowVerdict? { verdicts.first { $0.0.elementsEqual(field) }?.1 }

    /// A line's fields in order, each a view of the line's bytes.
    struct Fields {
        let line: UnsafeBufferPointer<UInt8>
        var start = 0

        init(_ line: UnsafeBufferPointer<UInt8>) { self.line = line }

        var atEnd: Bool { start > line.count }

        mutating func next() -> UnsafeBufferPointer<UInt8>? {
            guard start <= line.count else { return nil }
            var end = start
            while end < line.count && line[end] != UInt8(ascii: "|") { end += 1 }
            defer { start = end + 1 }
            return UnsafeBufferPointer(rebasing: line[start..<end])
        }

        mutating func number<T: FixedWidthInteger>(_: T.Type) -> T? { next().flatMap { StrictDecimal.parse(utf8: $0, as: T.self) } }

        /// `.some(nil)` for '-', the value for a number, `nil` when the field is neither.
        mutating func optional<T: FixedWidthInteger>(_: T.Type) -> T?? {
            guard let field = next() else { return nil }
            if field.count == 1 && field[0] == UInt8(ascii: "-") { return .some(nil) }
            return StrictDecimal.parse(utf8: field, as: T.self).map { .some($0) }
        }
    }
}

/// A host's rows as one text, `FlowRow.line` joined by newlines (`string_agg` in PostgreSQL; no
/// field holds a newline), read into typed flows from the wire's bytes. One row a host, not
/// 2,000: the protocol's work per row, on both sides, was a fifth of a fleet propose.
struct UploadedFlows: PostgresDecodable {
    let flows: [FleetFlow]

    init<JSONDecoder: PostgresJSONDecoder>(from byteBuffer: inout ByteBuffer, type: PostgresDataType, format: PostgresFormat,
                                           context: PostgresDecodingContext<JSONDecoder>) throws {
        guard type == .text else { throw PostgresDecodingError.Code.typeMismatch }
        flows = byteBuffer.withUnsafeReadableBytes { FlowRow.flows(utf8: $0.assumingMemoryBound(to: UInt8.self)) }
    }
}
