/// A scan of YAML text for how deeply it nests, before the YAML library sees it: libyaml and
/// Yams build the tree recursively, and a file nested a few thousand levels deep
/// (`networks: [[[[…]]]]`) overflows the stack and kills the process. Nothing Cordon reads
/// nests more than a handful of levels, so anything deeper is refused with its place.
///
/// The scan is an over-estimate by design: flow brackets outside quotes and comments, plus one
/// level per block indentation step and per leading `- ` or `? ` indicator. It never undercounts
/// real nesting, so a file it accepts cannot recurse deeper than the limit.
public enum YAMLDepth {
    public static let limit = 64

    /// Where the nesting first exceeds `limit` (1-based line and column), or nil.
    public static func firstTooDeep(_ text: String, limit: Int = limit) -> (line: Int, column: Int)? {
        var flow = 0
        var indents: [Int] = []
        var line = 1
        var quote: UInt8?
        let bytes = Array(text.utf8) + [UInt8(ascii: "\n")]
        var index = 0
        var column = 0
        var atLineStart = true
        var previous: UInt8 = UInt8(ascii: " ")

        func blockLevels(startingAt start: Int) -> (levels: [Int], next: Int) {
            // The line's indentation, then one level per leading "- " or "? " indicator.
            var position = start
            var levels: [Int] = []
            while position < bytes.count, bytes[position] == UInt8(ascii: " ") { position += 1 }
            if position < bytes.count, bytes[position] != UInt8(ascii: "\n"), bytes[position] != UInt8(ascii: "#") {
                levels.append(position - start)
            }
            while position + 1 < bytes.count,
                  bytes[position] == UInt8(ascii: "-") || bytes[position] == UInt8(ascii: "?"),
                  bytes[position + 1] == UInt8(ascii: " ") {
                position += 2
                while position < bytes.count, bytes[position] == UInt8(ascii: " ") { position += 1 }
                levels.append(position - start)
            }
            return (levels, position)
        }

        while index < bytes.count {
            if atLineStart && quote == nil && flow == 0 {
                atLineStart = false
                let (levels, next) = blockLevels(startingAt: index)
                for level in levels {
                    while let last = indents.last, last >= level { indents.removeLast() }
                    indents.append(level)
                    if indents.count > limit { return (line, level + 1) }
                }
                column += next - index
                index = next
                previous = UInt8(ascii: " ")
                continue
            }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 0
                atLineStart = true
                index += 1
                previous = UInt8(ascii: " ")
                continue
            }
            column += 1
            if let open = quote {
                if open == UInt8(ascii: "\"") && byte == UInt8(ascii: "\\") {
                    index += 2
                    column += 1
                    continue
                }
                if byte == open {
                    // '' inside a single-quoted scalar is an escaped quote.
                    if open == UInt8(ascii: "'"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "'") {
                        index += 2
                        column += 1
                        continue
                    }
                    quote = nil
                }
                index += 1
                previous = byte
                continue
            }
            let afterSeparator = previous == UInt8(ascii: " ") || previous == UInt8(ascii: "\t") || previous == UInt8(ascii: "[")
                || previous == UInt8(ascii: "{") || previous == UInt8(ascii: ",") || previous == UInt8(ascii: ":")
            switch byte {
            case UInt8(ascii: "#") where previous == UInt8(ascii: " ") || previous == UInt8(ascii: "\t"):
                while bytes[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                if afterSeparator { quote = byte }
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                flow += 1
                if indents.count + flow > limit { return (line, column) }
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                flow = max(0, flow - 1)
            default:
                break
            }
            previous = byte
            index += 1
        }
        return nil
    }
}
