import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Text forms of time used on the command line and in JSON.
public enum TimeText {
    /// RFC 3339 in UTC with second precision: `2026-11-22T21:05:48Z`.
    public static func rfc3339(_ unixSeconds: Int64) -> String {
        var time = time_t(unixSeconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
            + "T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))Z"
    }

    /// Unix seconds of an RFC 3339 time. The form `rfc3339` writes (every stored row has it) is
    /// read by arithmetic: Foundation's ISO 8601 strategy cost 1 µs a field, a quarter of a
    /// fleet propose's time per row. Any other form (offsets, fractions) goes to Foundation.
    public static func unix<S: StringProtocol>(_ text: S) -> Int64? {
        if let fast = text.utf8.withContiguousStorageIfAvailable(Self.fixed) ?? nil { return fast }
        return (try? Date(String(text), strategy: .iso8601)).map { Int64($0.timeIntervalSince1970.rounded(.down)) }
    }

    /// The same from UTF-8 bytes, for a stored flow row's times: no `String` made for the
    /// fixed form.
    public static func unix(utf8 text: UnsafeBufferPointer<UInt8>) -> Int64? {
        fixed(text) ?? unix(String(decoding: text, as: UTF8.self))
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` in Unix seconds; nil for any other shape.
    private static func fixed(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard b.count == 20, b[4] == 0x2D, b[7] == 0x2D, b[10] == 0x54, b[13] == 0x3A, b[16] == 0x3A, b[19] == 0x5A else { return nil }
        func digits(_ from: Int, _ count: Int) -> Int64? {
            var value: Int64 = 0
            for i in from..<from + count {
                guard (0x30...0x39).contains(b[i]) else { return nil }
                value = value * 10 + Int64(b[i] - 0x30)
            }
            return value
        }
        guard let y = digits(0, 4), let m = digits(5, 2), let d = digits(8, 2), let h = digits(11, 2), let mi = digits(14, 2), let s = digits(17, 2),
              (1...12).contains(m), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
        // Days since 1970-01-01 of the proleptic Gregorian date (the days-from-civil formula).
        let year = m <= 2 ? y - 1 : y
        let era = (year >= 0 ? year : year - 399) / 400
        let yoe = year - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86_400 + h * 3600 + mi * 60 + s
    }

    /// Parses a span such as `90s`, `15m`, `2h`, `7d` or `1w` into seconds.
    public static func duration(_ text: String) -> Int64? {
        guard let unit = text.last, let value = Int64(text.dropLast()), value >= 0 else { return nil }
        let scale: Int64
        switch unit {
        case "s": scale = 1
        case "m": scale = 60
        case "h": scale = 3600
        case "d": scale = 86_400
        case "w": scale = 604_800
        default: return nil
        }
        let (seconds, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : seconds
    }

    /// Current Unix time in seconds.
    public static func now() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec)
    }
}
