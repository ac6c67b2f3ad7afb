import CordonWire
import Foundation
import Hummingbird

/// `/api/v1/intents`: every isolation request and how it ended.
struct IntentsController {
    let stores: Stores
    let deadline: DatabaseDeadline

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("intents", use: deadline(list))
        group.get("intents/:id", use: deadline(show))
        group.post("intents/:id/cancel", use: deadline(cancel))
        group.get("audit", use: deadline(audit))
    }

    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let query = request.uri.queryParameters
        let host = try query.get("host_id").map { try JSON.uuid($0, field: "host_id") }
        var status: IntentStatus?
        if let text = query.get("status") {
            guard let value = IntentStatus(rawValue: text) else {
                throw APIFailure(.badRequest, "expected one of \(IntentStatus.allCases.map(\.rawValue).joined(separator: ", "))", field: "status")
            }
            status = value
        }
        var limit = 1000
        if let text = query.get("limit") {
            guard let value = Int(text), (1...10_000).contains(value) else { throw APIFailure(.badRequest, "expected 1-10000", field: "limit") }
            limit = value
        }
        return JSON.response(Page(items: try await stores.desired.intents(host: host, status: status, limit: limit)))
    }

    @Sendable func show(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        guard let intent = try await stores.desired.intent(id) else { throw APIFailure(.notFound, "no intent with id \(id.uuidString.lowercased())", field: "id") }
        return JSON.response(intent)
    }

    @Sendable func cancel(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.responder)
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        let intent: IntentView
        do {
            intent = try await stores.desired.cancel(intent: id, by: token.name)
        } catch let refusal as IsolationRefusal {
            if case .notPending(let status) = refusal {
                throw APIFailure(.conflict, "intent \(id.uuidString.lowercased()) is \(status.rawValue), not pending: nothing to cancel", field: "id")
            }
            throw APIFailure(.notFound, "no intent with id \(id.uuidString.lowercased())", field: "id")
        }
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "cancel intent", target: intent.hostID,
                                      detail: "intent \(intent.id) (\(intent.state), generation \(intent.generation))", remote: context.remote)
        return JSON.response(intent)
    }

    @Sendable func audit(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.admin)
        return JSON.response(Page(items: try await stores.audit.entries(limit: 1000)))
    }
}
