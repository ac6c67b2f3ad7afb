import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import Synchronization

/// What one peer may hold of the server before it has proved anything. Without these, idle or
/// slow connections from one address (no credential needed) used every descriptor the server
/// had, and analysts and agents got TLS handshake timeouts until the attacker let go.
public struct ConnectionLimits: Sendable {
    /// Connections one address may hold at once; more are closed as they are accepted. An agent
    /// holds one, an analyst's CLI a few; a NAT in front of many agents needs more (`--max-connections-per-address`).
    public var perAddress: Int
    /// From accept to a finished TLS handshake.
    public var handshake: Double
    /// A connection with no request in progress (the long poll is a request in progress): also
    /// the time a client has to send a request's headers, since only a complete head counts as activity.
    public var idle: Double
    /// From the head to the whole body.
    public var body: Double

    public init(perAddress: Int = 64, handshake: Double = 10, idle: Double = 30, body: Double = 30) {
        self.perAddress = perAddress
        self.handshake = handshake
        self.idle = idle
        self.body = body
    }
}

/// Connections held per peer address, across the event loops.
final class PeerCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Counts one more for `peer`; false (and nothing counted) when it already holds the limit.
    func admit(_ peer: String) -> Bool {
        counts.withLock { c in
            guard c[peer, default: 0] < limit else { return false }
            c[peer, default: 0] += 1
            return true
        }
    }

    func release(_ peer: String) {
        counts.withLock { c in
            let left = c[peer, default: 1] - 1
            c[peer] = left > 0 ? left : nil
        }
    }

    func held(by peer: String) -> Int { counts.withLock { $0[peer] ?? 0 } }
}

/// Put after the TLS handler: counts the peer's connections (closing one over the limit at
/// once) and closes a connection whose handshake has not finished in time.
final class ConnectionGuardHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let peers: PeerCounts
    private let handshake: TimeAmount
    private let logger: Logger
    private var peer: String?
    private var handshakeTimer: Scheduled<Void>?

    init(peers: PeerCounts, handshake: TimeAmount, logger: Logger) {
        self.peers = peers
        self.handshake = handshake
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context) }
    }

    /// Accepted channels are built before they are registered, so this usually runs at
    /// `channelActive`: a close before then would not reach the socket.
    private func admit(_ context: ChannelHandlerContext) {
        guard peer == nil else { return }
        let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
        guard peers.admit(address) else {
            logger.debug("closing a connection from \(address): it holds \(peers.limit) already")
            context.close(promise: nil)
            return
        }
        peer = address
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: handshake) { [weak self] in
            self?.handshakeTimer = nil
            context.close(promise: nil)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context)
        if peer != nil { context.fireChannelActive() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        if let peer { peers.release(peer) }
        peer = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            handshakeTimer?.cancel()
            handshakeTimer = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        if let peer { peers.release(peer) }
        peer = nil
        context.fireChannelInactive()
    }
}

/// HTTP/1.1 behind the guard; TLS goes around it (`TLSChannel(GuardedHTTP1Channel(...))`), so
/// the guard sits after the TLS handler and sees its handshake event.
struct GuardedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    let peers: PeerCounts
    let handshake: TimeAmount

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits, peers: PeerCounts) {
        base = HTTP1Channel(responder: responder, configuration: .init(idleTimeout: .milliseconds(Int64(limits.idle * 1000))))
        self.peers = peers
        handshake = .milliseconds(Int64(limits.handshake * 1000))
    }

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ConnectionGuardHandler(peers: peers, handshake: handshake, logger: logger))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            // Right after the request decoder, while the head still says which HTTP version it is.
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(ConnectionCloseHandler(), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTPS/1.1 with the connection limits.
    static func guardedTLS(_ tls: TLSConfiguration, limits: ConnectionLimits, peers: PeerCounts) -> HTTPServerBuilder {
        .init { responder in
            try TLSChannel(GuardedHTTP1Channel(responder: responder, limits: limits, peers: peers), tlsConfiguration: tls)
        }
    }
}

/// HTTP/1.0 closes after the response unless the client asks to keep the connection; Hummingbird
/// sees requests as HTTP types, without their version, and closes only on a literal
/// `Connection: close`. So an HTTP/1.0 request without `keep-alive` (and a `Close` in any case)
/// is given that header here, and its connection is not left open holding a descriptor.
final class ConnectionCloseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        let tokens = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        if tokens.contains("close") || (head.version.major == 1 && head.version.minor == 0 && !tokens.contains("keep-alive")) {
            head.headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
