import CordonWire
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

/// `/api/v1/events`: server-sent events for open console pages, which host or rollout changed
/// (`FleetEvents`). A stream lasts at most `lifetime`; the browser's EventSource reconnects by
/// itself (after `retry`), and the page re-reads on every (re)connection, so nothing a gap
/// could hide stays stale.
struct EventsController {
    let events: FleetEvents
    static let lifetime: Duration = .seconds(600)

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("events", use: stream)
    }

    @Sendable func stream(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let stream = await events.listen()
        let started = ContinuousClock.now
        let body = ResponseBody { writer in
            try await writer.write(ByteBuffer(string: "retry: 3000\n: connected\n\n"))
            // The watcher sends a keep-alive at least every 15 s, so the lifetime is checked that
            // often; a page that went away fails the next write, which ends the stream and its listener.
            // A server shutting down ends every stream at once, rather than wait out their lifetimes.
            for await text in stream.cancelOnGracefulShutdown() {
                try await writer.write(ByteBuffer(string: text))
                if ContinuousClock.now - started > Self.lifetime { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }
}
