import CordonWire
import Foundation
import Hummingbird
import HTTPTypes

/// `/api/v1/hosts`: the record of every host, its isolation, its log and its flows.
struct HostsController {
    let stores: Stores
    let deadline: DatabaseDeadline
    static let isolationBody = 64 << 10

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("hosts", use: deadline(list))
        group.get("hosts/:id", use: deadline(show))
        group.post("hosts/:id/isolation", use: deadline(isolation, body: Self.isolationBody))
        group.get("hosts/:id/log", use: deadline(log))
        group.get("hosts/:id/flows", use: deadline(flows))
    }

    private func host(_ context: ServerContext) async throws -> HostView {
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        guard let host = try await stores.hosts.host(id) else { throw APIFailure(.notFound, "no host with id \(id.uuidString.lowercased())", field: "id") }
        return host
    }

    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        return JSON.response(Page(items: try await stores.hosts.hosts(limit: 100_000)))
    }

    @Sendable func show(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        return JSON.response(try await host(context))
    }

    @Sendable func isolation(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.responder)
        let body = try await JSON.decode(IsolationRequest.self, from: request, limit: Self.isolationBody)
        guard body.reason.schemaLength <= 1000 else { throw APIFailure(.unprocessableContent, "at most 1000 characters", field: "reason") }
        if body.state == .isolated && body.reason.isBlank {
            throw APIFailure(.unprocessableContent, "an isolation needs a reason", field: "reason")
        }
        if let external = body.externalID, external.schemaLength > 200 { throw APIFailure(.unprocessableContent, "at most 200 characters", field: "external_id") }
        let key = request.headers[HTTPField.Name("Idempotency-Key")!]
        if let key, key.isEmpty || key.schemaLength > 200 { throw APIFailure(.badRequest, "expected 1-200 characters", field: "Idempotency-Key") }
        let host = try await host(context)
        let id = UUID(uuidString: host.id)!
        let accepted: IntentAccepted
        do {
            accepted = try await stores.desired.request(host: id, body, by: token.name, tokenID: token.id, idempotencyKey: key)
        } catch let refusal as IsolationRefusal {
            switch refusal {
            case .revoked: throw APIFailure(.conflict, "host \(host.id) is revoked", field: "id")
            case .keyReused: throw APIFailure(.unprocessableContent, "this key was used for another request", field: "Idempotency-Key")
            default: throw APIFailure(.notFound, "no host with id \(host.id)", field: "id")
            }
        }
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "isolation \(body.state.rawValue)", target: host.id,
                                      detail: "intent \(accepted.intentID) generation \(accepted.generation) \(accepted.status.rawValue): \(body.reason)",
                                      remote: context.remote)
        return JSON.response(accepted, status: .accepted)
    }

    @Sendable func log(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let host = try await host(context)
        return JSON.response(try await stores.log.log(host: UUID(uuidString: host.id)!))
    }

    @Sendable func flows(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let host = try await host(context)
        return JSON.response(try await stores.flows.flows(host: UUID(uuidString: host.id)!))
    }
}
