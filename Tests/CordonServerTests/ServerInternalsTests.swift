@testable import CordonServer
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
