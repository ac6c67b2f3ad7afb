import CordonCore
import CordonWire
import Foundation
import Hummingbird

/// `/api/v1/assignments`: a ruleset (a version, or the latest approved) bound to a selector.
/// Every change recomputes the hosts' effective policies; none reaches a host's kernel before a
/// rollout does (the host's `sync` says `pending` meanwhile).
struct AssignmentsController {
    let stores: Stores
    let deadline: DatabaseDeadline

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("assignments", use: deadline(list))
        group.post("assignments", use: deadline(create, body: 64 << 10))
        group.delete("assignments/:id", use: deadline(remove))
    }

    /// The active assignments with the version each brings now and how many hosts it matches.
    static func views(_ stores: Stores) async throws -> [AssignmentView] {
        let directory = try await stores.hosts.directory()
        let (resolved, _) = try await EffectivePolicies.resolve(stores)
        return try await stores.policy.assignments().map { a in
            let r = resolved.first { $0.assignment.id == a.id }
            return AssignmentView(id: a.id.uuidString.lowercased(), ruleset: a.ruleset, version: a.version, resolvedVersion: r?.version ?? 0,
                                  selector: a.selector, createdBy: a.createdBy, createdAt: Time.text(a.createdAt),
                                  hosts: r.map { HostSelection.matching($0.selector, in: directory).count } ?? 0)
        }
    }

    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        return JSON.response(Page(items: try await Self.views(stores)))
    }

    @Sendable func create(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.approver)
        let body = try await JSON.decode(AssignmentRequest.self, from: request, limit: 64 << 10)
        let selector = try HostSelection.parse(body.selector)
        if let version = body.version, version < 1 { throw APIFailure(.unprocessableContent, "versions start at 1", field: "version") }
        guard let version = try await stores.policy.version(name: body.ruleset, version: body.version) else {
            throw APIFailure(.unprocessableContent, body.version.map { "ruleset \(body.ruleset) has no version \($0)" }
                                 ?? "no approved version of ruleset \(body.ruleset)", field: body.version == nil ? "ruleset" : "version")
        }
        let matched = HostSelection.matching(selector, in: try await stores.hosts.directory())
        guard !matched.isEmpty else { throw APIFailure(.unprocessableContent, "selector \(selector) matches no host", field: "selector") }
        let id = try await stores.policy.addAssignment(ruleset: body.ruleset, version: body.version, selector: selector.description, by: token.name)
        let changed = try await EffectivePolicies.recompute(stores)
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "assign", target: id.uuidString.lowercased(),
                                      detail: "\(body.ruleset)@\(body.version.map(String.init) ?? "latest (\(version.version))") to \(selector) (\(matched.count) hosts; \(changed) effective policies changed)",
                                      remote: context.remote)
        return JSON.response(AssignmentView(id: id.uuidString.lowercased(), ruleset: body.ruleset, version: body.version, resolvedVersion: version.version,
                                            selector: selector.description, createdBy: token.name, createdAt: Time.text(Date()), hosts: matched.count),
                             status: .created)
    }

    @Sendable func remove(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.approver)
        let id = try JSON.uuid(context.parameters.get("id"), field: "id")
        guard try await stores.policy.removeAssignment(id, by: token.name) else {
            throw APIFailure(.notFound, "no active assignment with id \(id.uuidString.lowercased())", field: "id")
        }
        let changed = try await EffectivePolicies.recompute(stores)
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "unassign", target: id.uuidString.lowercased(),
                                      detail: "\(changed) effective policies changed", remote: context.remote)
        return JSON.response(["removed": id.uuidString.lowercased()])
    }
}
