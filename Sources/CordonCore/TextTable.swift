/// Plain aligned columns for terminal output; the last column is not padded.
public struct TextTable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) { self.header = header }

    public mutating func add(_ row: [String]) { rows.append(row) }

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
