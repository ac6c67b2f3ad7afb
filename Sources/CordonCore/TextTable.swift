/// Plain aligned columns for terminal output; the last column is not padded.
public struct TextTable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) { self.header = header }

    public mutating func add(_ row: [String]) { rows.append(row) }

    public var text: String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column] + 2)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }
}

extension String {
    fileprivate func padding(toLength length: Int) -> String {
        count >= length ? self + " " : self + String(repeating: " ", count: length - count)
    }
}

extension FlowRecord {
    /// The columns of `cordon flows` without `--json`.
    public static func table(_ records: [FlowRecord]) -> String {
        var table = TextTable(header: ["DIRECTION", "PROTO", "LOCAL", "PORT", "REMOTE", "RPORT", "CONNS", "FIRST SEEN", "LAST SEEN"])
        for r in records {
            let icmp = r.icmpType.map { "type \($0)/\(r.icmpCode ?? 0)" }
            table.add([
                r.direction.rawValue, r.protocol, r.localAddress,
                r.localPort.map(String.init) ?? (r.direction == .inbound ? icmp ?? "-" : "-"),
                r.remoteAddress,
                r.remotePort.map(String.init) ?? (r.direction != .inbound ? icmp ?? "-" : "-"),
                String(r.connections), r.firstSeen, r.lastSeen,
            ])
        }
        return table.text
    }
}
