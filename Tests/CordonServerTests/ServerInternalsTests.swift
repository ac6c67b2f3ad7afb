@testable import CordonServer
import Foundation
import Hummingbird
import Testing

/// The byte scan that decides whether a decoded body is walked for NUL: it may say yes to text
/// that holds none (the walk then finds nothing), never no to text that holds one.
@Suite struct NULScanTests {
    @Test(arguments: [
        (#"{"reason":"a\u0000b"}"#, true),
        (#"{"reason":"\u0000"}"#, true),
        (#"{"reason":"a\\\u0000"}"#, true),   // an escaped backslash, then the escape
        (#"{"reason":"a\\u0000b"}"#, false),  // the six characters \u0000, no NUL
        (#"{"reason":"\u00001"}"#, true),
        (#"{"reason":"\u0001"}"#, false),
        (#"{"reason":"\u000"}"#, false),
        (#"{"reason":"u0000 \n"}"#, false),
        ("{\"reason\":\"raw\u{0}\"}", true),
        (#"{"flows":[]}"#, false),
    ])
    func escapesAreFound(body: String, holds: Bool) {
        #expect(JSON.mayHoldNUL(ByteBuffer(string: body).readableBytesView) == holds, "\(body)")
    }
}

/// A cache of stamped rows starts over when transaction ids went backwards: the database is
/// another cluster's (a restore), and stamps above its ids would otherwise hide its rows.
@Suite struct StampedCacheTests {
    @Test func idsGoingBackwardsStartOver() {
        #expect(!StampedCache<Int>.startsOver(horizon: "0", xmin: "5"))
        #expect(!StampedCache<Int>.startsOver(horizon: "900", xmin: "900"))
        #expect(!StampedCache<Int>.startsOver(horizon: "900", xmin: "1200"))
        #expect(StampedCache<Int>.startsOver(horizon: "900", xmin: "740"))
        #expect(StampedCache<Int>.startsOver(horizon: "18446744073709551000", xmin: "3"))
    }
}

/// A refused re-base is logged once per host per quarter hour, not at every report.
@Suite struct RefusalLogTests {
    @Test func oncePerHostPerInterval() {
        let log = RefusalLog(), a = UUID(), b = UUID(), start = Date(timeIntervalSince1970: 1_000_000)
        #expect(log.shouldLog(a, now: start))
        #expect(!log.shouldLog(a, now: start.addingTimeInterval(5)), "the next report's refusal is not logged")
        #expect(log.shouldLog(b, now: start.addingTimeInterval(5)), "another host's is")
        #expect(!log.shouldLog(a, now: start.addingTimeInterval(RefusalLog.interval - 1)))
        #expect(log.shouldLog(a, now: start.addingTimeInterval(RefusalLog.interval)), "a quarter hour on, again")
    }
}
