import CordonWire
import Foundation
import Hummingbird
import Synchronization

/// A bound on how long work that waits on PostgreSQL may take. A paused or unreachable database
/// answers nothing and closes nothing: without a bound every request hangs with it, and a load
/// balancer sees a replica that accepts connections and never answers.
///
/// The work runs in a task of its own and is abandoned, not awaited, when the deadline passes:
/// a query stuck on a stopped backend does not notice cancellation, and waiting for it is the
/// hang this exists to end. It finishes, or fails, when the database comes back or its
/// connection breaks; until then it holds its pool connection, so later requests find the pool
/// busy and meet the same deadline.
public enum Deadline {
    /// The deadline passed: the client is told 503 with `Retry-After`. What the work would have
    /// changed is unknown (it may still commit), which is why isolation takes an Idempotency-Key.
    public struct Exceeded: Error, CustomStringConvertible {
        public let seconds: Double
        public var description: String { "the database did not answer within \(seconds) s" }
    }

    public static func run<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = Race<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                race.start(continuation)
                let work = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await body()) } catch { result = .failure(error) }
                    race.finish(result)
                }
                let timer = Task {
                    try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                    if !Task.isCancelled, race.finish(.failure(Exceeded(seconds: seconds))) { work.cancel() }
                }
                race.onFinish { timer.cancel() }
            }
        } onCancel: {
            race.finish(.failure(CancellationError()))
        }
    }

    /// The first of work, timer and cancellation to finish resumes the caller; the others find it done.
    private final class Race<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var early: Result<T, any Error>?
            var done = false
            var cleanup: (@Sendable () -> Void)?
        }
        private let state = Mutex(State())

        func start(_ continuation: CheckedContinuation<T, any Error>) {
            let early = state.withLock { s -> Result<T, any Error>? in
                if let early = s.early { return early }
                s.continuation = continuation
                return nil
            }
            if let early { continuation.resume(with: early) }
        }

        func onFinish(_ cleanup: @escaping @Sendable () -> Void) {
            let done = state.withLock { s -> Bool in
                if !s.done { s.cleanup = cleanup }
                return s.done
            }
            if done { cleanup() }
        }

        /// True when this result was the one delivered.
        @discardableResult
        func finish(_ result: Result<T, any Error>) -> Bool {
            let (continuation, cleanup, first) = state.withLock { s -> (CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?, Bool) in
                guard !s.done else { return (nil, nil, false) }
                s.done = true
                if s.continuation == nil { s.early = result }
                defer { s.continuation = nil; s.cleanup = nil }
                return (s.continuation, s.cleanup, true)
            }
            continuation?.resume(with: result)
            cleanup?()
            return first
        }
    }
}

/// The deadline the routes share. A handler is wrapped whole (its reads and writes together);
/// the agents' long poll, which waits by design, bounds each of its reads instead. A request's
/// body is read first, under a deadline of its own: a slow upload is the client's time, not the
/// database's, and a client that trickles it is cut off at `body` seconds.
public struct DatabaseDeadline: Sendable {
    public static let standard: Double = 5
    public let seconds: Double
    var body: Double = ConnectionLimits().body

    public init(seconds: Double = DatabaseDeadline.standard) {
        self.seconds = seconds
    }

    typealias Handler = @Sendable (Request, ServerContext) async throws -> Response

    /// `seconds`: this route's own deadline, for the few whose work is a batch (a review reads
    /// every matching host's record), instead of the server's per-request one.
    func callAsFunction(_ handler: @escaping Handler, body limit: Int = 1 << 20, seconds own: Double? = nil) -> Handler {
        let seconds = own.map { max($0, self.seconds) } ?? self.seconds
        return { [body] request, context in
            var request = request
            if request.method == .post || request.method == .put || request.method == .patch {
                request = try await Self.collect(request, limit: limit, seconds: body)
            }
            return try await Deadline.run(seconds: seconds) { [request] in try await handler(request, context) }
        }
    }

    private static func collect(_ request: Request, limit: Int, seconds: Double) async throws -> Request {
        do {
            return try await Deadline.run(seconds: seconds) {
                var request = request
                _ = try await request.collectBody(upTo: limit)
                return request
            }
        } catch is Deadline.Exceeded {
            throw APIFailure(.requestTimeout, "the body did not arrive within \(Int(seconds)) s")
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIFailure(.contentTooLarge, "the body is larger than \(limit) bytes")
        }
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Deadline.run(seconds: seconds, body)
    }
}
