import CordonWire
import Foundation
import Hummingbird
import HTTPTypes

/// `/api/v1/hosts`: the record of every host, its isolation, its log and its flows.
struct HostsController {
    let stores: Stores
    let deadline: DatabaseDeadline
    static let isolationBody = 64 << 10
    static let tagsBody = 64 << 10
    static let largestPage = 1000

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("hosts", use: deadline(list))
        group.get("selectors/preview", use: deadline(preview))
        group.get("hosts/:id", use: deadline(show))
        group.patch("hosts/:id/tags", use: deadline(tags, body: Self.tagsBody))
        group.post("hosts/:id/isolation", use: deadline(isolation, body: Self.isolationBody))
        group.get("hosts/:id/log", use: deadline(log))
        group.get("hosts/:id/flows", use: deadline(flows))
    }

    private func host(_ context: ServerContext) async throws -> HostView {
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        guard let host = try await stores.hosts.host(id) else { throw APIFailure(.notFound, "no host with id \(id.uuidString.lowercased())", field: "id") }
        return host
    }

    /// Paged by `limit` and `offset`, sorted by `sort` and `order` (by host name); `selector`
    /// keeps the hosts it matches.
    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let query = request.uri.queryParameters
        let (offset, limit) = try Paging.parse(limit: query.get("limit"), offset: query.get("offset"), largest: Self.largestPage,
                                               defaultLimit: Self.largestPage)
        let order = try Self.order(query.get("sort"), query.get("order"))
        let selector = try query.get("selector").map { try HostSelection.parse($0) }
        // The directory holds hosts that are not revoked; without a selector the list shows them all.
        var ids: [UUID]?
        if let selector { ids = HostSelection.matching(selector, in: try await stores.hosts.directory()).map(\.id) }
        let page = try await stores.hosts.page(ids: ids, order: order, offset: offset, limit: limit)
        return JSON.response(Page(items: page.items, total: page.total))
    }

    static func order(_ sort: String?, _ order: String?) throws -> HostOrder {
        guard let key = sort.map({ HostOrder.Key(rawValue: $0) }) ?? .hostname else {
            throw APIFailure(.badRequest, "expected one of \(HostOrder.Key.allCases.map(\.rawValue).joined(separator: ", "))", field: "sort")
        }
        let direction = order ?? "asc"
        guard ["asc", "desc"].contains(direction) else { throw APIFailure(.badRequest, "expected asc or desc", field: "order") }
        return HostOrder(key, descending: direction == "desc")
    }

    @Sendable func preview(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        guard let text = request.uri.queryParameters.get("selector") else { throw APIFailure(.badRequest, "is required", field: "selector") }
        let selector = try HostSelection.parse(text)
        let matching = HostSelection.matching(selector, in: try await stores.hosts.directory())
        return JSON.response(SelectorPreview(selector: selector.description, matches: matching.count,
                                             hosts: matching.prefix(SelectorPreview.shown).map {
                                                 SelectorPreview.HostName(id: $0.id.uuidString.lowercased(), hostname: $0.hostname) }))
    }

    /// An administrator's tags, audited with what changed.
    @Sendable func tags(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.admin)
        let change = try await JSON.decode(TagChange.self, from: request, limit: Self.tagsBody)
        do { try Validation.tagChange(change) } catch { throw APIFailure(.unprocessableContent, error.message, field: error.field) }
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        let host: HostView?
        do { host = try await stores.hosts.changeTags(host: id, change) } catch let error as TooManyTags {
            throw APIFailure(.unprocessableContent, "the host would have \(error.count) tags; at most \(Limits.tags)", field: "set")
        }
        guard let host else { throw APIFailure(.notFound, "no host with id \(id.uuidString.lowercased())", field: "id") }
        // Tags move hosts in and out of selectors: their effective policies follow.
        try await EffectivePolicies.recompute(stores)
        let detail = (change.set.sorted { $0.key < $1.key }.map { "set \($0.key)=\($0.value)" } + change.unset.sorted().map { "unset \($0)" })
            .joined(separator: ", ")
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "tags", target: host.id, detail: detail, remote: context.remote)
        return JSON.response(try await stores.hosts.host(id) ?? host)
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
