/// Plain aligned columns for terminal output; the last column is not padded.
public struct TextTable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) { self.header = header }

    /// Cells are made terminal-safe here, once for every table: much of what they show (host
    /// names, agent versions, DNS names, reasons) was written by someone else.
    public mutating func add(_ row: [String]) { rows.append(row.map(\.terminalSafe)) }

    public var text: String { text(indent: "") }

    /// Every line starts with `indent` (for tables nested in a report).
    public func text(indent: String) -> String {
        let all = [header] + rows
        var widths = [Int](repeating: 0, count: header.count)
        for row in all {
            for (column, cell) in row.enumerated() where column < widths.count { widths[column] = max(widths[column], cell.count) }
        }
        var out = ""
        for row in all {
            out += indent
            for (column, cell) in row.enumerated() {
                out += cell
                if column < row.count - 1 { out += String(repeating: " ", count: max(1, widths[column] + 2 - cell.count)) }
            }
            out += "\n"
        }
        return out
    }
}

extension FlowRecord {
    /// The columns of `cordon flows` without `--json`.
    public static func table(_ records: [FlowRecord], indent: String = "") -> String {
        var table = TextTable(header: ["DIRECTION", "PROTO", "LOCAL", "PORT", "REMOTE", "NAME", "RPORT", "CONNS", "FIRST SEEN", "LAST SEEN"])
        for r in records {
            let icmp = r.icmpType.map { "type \($0)/\(r.icmpCode ?? 0)" }
            table.add([
                r.verdict == .rejected ? "\(r.direction.rawValue) REJECTED" : r.direction.rawValue, r.protocol, r.localAddress,
                r.localPort.map(String.init) ?? (r.direction == .inbound ? icmp ?? "-" : "-"),
                r.remoteAddress, r.remoteNames.first ?? "-",
                r.remotePort.map(String.init) ?? (r.direction != .inbound ? icmp ?? "-" : "-"),
                String(r.connections), r.firstSeen, r.lastSeen,
            ])
        }
        return table.text(indent: indent)
    }
}

extension String {
    /// Control characters (C0, DEL, C1) and the bidirectional overrides written as visible escapes
    /// (`\e`, `\n`, `\u{202e}`): text from a host or a packet cannot move the cursor, clear a
    /// line, draw a fake row, or reorder what an analyst's terminal shows.
    public var terminalSafe: String {
        guard unicodeScalars.contains(where: Self.needsEscape) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            guard Self.needsEscape(scalar) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            switch scalar {
            case "\u{1B}": out += "\\e"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out += "\\u{" + String(scalar.value, radix: 16) + "}"
            }
        }
        return out
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}
