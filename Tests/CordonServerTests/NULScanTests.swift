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
