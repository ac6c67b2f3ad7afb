import CordonCore
import CordonWire
import Foundation
import Hummingbird

/// `/api/v1/rulesets` and `/api/v1/reviews`: a ruleset reviewed against the record of the hosts
/// it is for, approved as an immutable version with that review.
struct RulesetsController {
    let stores: Stores
    let deadline: DatabaseDeadline
    static let body = 4 << 20
    /// Reviews read every matching host's record: longer than one request's database deadline.
    static let reviewSeconds: Double = 60

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("rulesets", use: deadline(list))
        group.get("rulesets/:name/versions/:version", use: deadline(show))
        group.post("reviews", use: deadline(review, body: Self.body, seconds: Self.reviewSeconds))
        group.post("proposals", use: deadline(propose, body: Self.body, seconds: Self.reviewSeconds))
        group.post("rulesets/:name/versions", use: deadline(approve, body: Self.body, seconds: Self.reviewSeconds))
    }

    static func name(_ context: ServerContext) throws -> String {
        guard let name = context.parameters.get("name"), !name.isEmpty, name.count <= RulesetLimits.nameLength,
              name.first.map({ $0.isASCII && ($0.isLowercase || $0.isNumber) }) == true,
              name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw APIFailure(.badRequest, "expected 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit", field: "name")
        }
        return name
    }

    @Sendable func list(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let assignments = try await AssignmentsController.views(stores)
        let views = try await stores.policy.rulesets().map { entry in
            RulesetView(name: entry.name, versions: entry.versions, assignments: assignments.filter { $0.ruleset == entry.name })
        }
        return JSON.response(Page(items: views))
    }

    @Sendable func show(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let name = try Self.name(context)
        guard let version = context.parameters.get("version").flatMap({ Int64($0) }), version > 0 else {
            throw APIFailure(.badRequest, "expected a version number", field: "version")
        }
        guard let found = try await stores.policy.version(name: name, version: version) else {
            throw APIFailure(.notFound, "no version \(version) of ruleset \(name)", field: "version")
        }
        return JSON.response(found)
    }

    /// Parses, picks the hosts, and reviews each against its record with what its other
    /// assignments add (a ruleset is never enforced alone: the host runs the union).
    static func review(_ stores: Stores, content: String, selector text: String?, since sinceText: String?, name: String?) async throws
        -> (ruleset: Ruleset, result: ReviewResult) {
        let ruleset: Ruleset
        do { ruleset = try RulesetParser.parse(content, file: name.map { "\($0).yaml" } ?? "ruleset.yaml") } catch {
            throw APIFailure(.unprocessableContent, "\(error)", field: "content")
        }
        let selector: Selector
        if let text = text {
            selector = try HostSelection.parse(text)
        } else if !ruleset.appliesTo.isEmpty {
            selector = ruleset.appliesTo.selector
        } else {
            throw APIFailure(.unprocessableContent, "say which hosts: give a selector, or appliesTo in the ruleset", field: "selector")
        }
        let sinceWords = sinceText ?? "7d"
        guard let since = TimeText.duration(sinceWords), since > 0 else {
            throw APIFailure(.badRequest, "expected a span such as 7d or 12h", field: "since")
        }
        let hosts = HostSelection.matching(selector, in: try await stores.hosts.directory())
        guard !hosts.isEmpty else { throw APIFailure(.unprocessableContent, "selector \(selector) matches no host", field: "selector") }
        let (resolved, _) = try await EffectivePolicies.resolve(stores)
        let from = TimeText.now() - since
        let reviews = try await Self.eachHost(hosts) { host in
            var parts = EffectivePolicies.parts(for: host, resolved, excluding: ruleset.name ?? name)
            parts.append(PolicyComposer.Part(ruleset: ruleset, name: ruleset.name ?? name ?? "reviewed", version: 0, assignment: "review"))
            let verdict = FleetReview.review(PolicyComposer.compose(parts).ruleset, flows: try await stores.flows.uploaded(host: host.id), since: from,
                                              management: host.management, shown: HostReview.shown)
            return HostReview(id: host.id.uuidString.lowercased(), hostname: host.hostname, flows: verdict.flows, allowed: verdict.allowed,
                              rejectedCount: verdict.rejectedCount, rejected: verdict.rejected, risks: verdict.risks)
        }
        return (ruleset, ReviewResult(selector: selector.description, since: sinceWords, sha256: ContentDigest.hex(content), hosts: reviews))
    }

    /// `body` for every host, a few at a time, each result handed to `each` in the hosts' order
    /// as soon as the hosts before it are done: one host's rows are decoded and merged while the
    /// database reads the next ones'.
    static func eachHost<T: Sendable>(_ hosts: [HostEntry], width: Int = 4, _ body: @escaping @Sendable (HostEntry) async throws -> T,
                                      each: (T) throws -> Void) async throws {
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var done: [Int: T] = [:], next = 0, handed = 0
            func add() {
                let index = next
                group.addTask { (index, try await body(hosts[index])) }
                next += 1
            }
            while next < min(width, hosts.count) { add() }
            while let (index, value) = try await group.next() {
                if next < hosts.count { add() }
                done[index] = value
                while let ready = done.removeValue(forKey: handed) {
                    try each(ready)
                    handed += 1
                }
            }
        }
    }

    static func eachHost<T: Sendable>(_ hosts: [HostEntry], width: Int = 4, _ body: @escaping @Sendable (HostEntry) async throws -> T) async throws -> [T] {
        var results: [T] = []
        try await eachHost(hosts, width: width, body) { results.append($0) }
        return results
    }

    @Sendable func review(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let body = try await JSON.decode(ReviewRequest.self, from: request, limit: Self.body)
        return JSON.response(try await Self.review(stores, content: body.content, selector: body.selector, since: body.since, name: nil).result)
    }

    /// One ruleset for a tier from the merged record of its hosts (`FleetProposal`); changes nothing.
    @Sendable func propose(_ request: Request, context: ServerContext) async throws -> Response {
        _ = try context.require(.viewer)
        let body = try await JSON.decode(ProposalRequest.self, from: request, limit: Self.body)
        let selector = try HostSelection.parse(body.selector)
        let sinceWords = body.since ?? "7d"
        guard let since = TimeText.duration(sinceWords), since > 0 else { throw APIFailure(.badRequest, "expected a span such as 7d or 12h", field: "since") }
        let minCoverage = body.minCoverage ?? 50
        guard (1...100).contains(minCoverage) else { throw APIFailure(.unprocessableContent, "expected a percentage from 1 to 100", field: "min_coverage") }
        let standard: Ruleset
        do { standard = try RulesetParser.parse(body.standardNetworks, file: "standard-networks.yaml") } catch {
            throw APIFailure(.unprocessableContent, "\(error)", field: "standard_networks")
        }
        let matched = HostSelection.matching(selector, in: try await stores.hosts.directory())
        guard !matched.isEmpty else { throw APIFailure(.unprocessableContent, "selector \(selector) matches no host", field: "selector") }
        var tier = FleetProposal.Tier(since: TimeText.now() - since)
        try await Self.eachHost(matched) { host in FleetProposal.Host(name: host.hostname, flows: try await stores.flows.uploaded(host: host.id)) } each: {
            tier.add($0)
        }
        let members = Set(matched.map(\.id))
        // Every other enrolled host is a peer an east-west flow can be named by.
        let peers = try await stores.hosts.hosts(limit: 100_000).filter { !$0.revoked && !members.contains(UUID(uuidString: $0.id)!) }
            .flatMap { view in view.addresses.compactMap(IPAddress.init).map { FleetProposal.Peer(address: $0, hostname: view.hostname, tags: view.tags) } }
        let result = FleetProposal.propose(selector: selector.description, tier: tier, peers: peers, minCoverage: minCoverage, standard: standard, names: (try? String(contentsOfFile: "/etc/services", encoding: .utf8)).map(ServiceNames.init(servicesFile:)) ?? ServiceNames())
        return JSON.response(ProposalResult(text: result.text, hosts: result.hosts, flows: result.flows, candidates: result.candidates,
                                            outliers: result.outliers))
    }

    /// A new version, approved with its review; refused while a host has a lockout risk unless
    /// the approver accepts them (each accepted risk is stored with the version).
    @Sendable func approve(_ request: Request, context: ServerContext) async throws -> Response {
        let token = try context.require(.approver)
        let name = try Self.name(context)
        let body = try await JSON.decode(ApproveRequest.self, from: request, limit: Self.body)
        let (ruleset, result) = try await Self.review(stores, content: body.content, selector: body.selector, since: body.since, name: name)
        if let own = ruleset.name, own != name {
            throw APIFailure(.unprocessableContent, "the file is named '\(own)', not '\(name)'", field: "content")
        }
        let risks = result.hosts.flatMap { host in host.risks.map { "\(host.hostname): \($0.message)" } }
        if !risks.isEmpty && !body.acceptRisks {
            throw APIFailure(.conflict, "lockout risks on \(result.summary.withRisks) host(s), e.g. \(risks[0]); review them and approve with accept_risks",
                             field: "accept_risks")
        }
        let stored = try await stores.policy.addVersion(name: name, content: body.content, sha256: result.sha256, approvedBy: token.name,
                                                        selector: result.selector, review: result.summary, risksAccepted: body.acceptRisks ? risks : [])
        // Assignments of "the latest" now bring this version.
        try await EffectivePolicies.recompute(stores)
        try await stores.audit.record(actor: token.name, role: token.role.rawValue, action: "ruleset approve", target: "\(name)@\(stored.version)",
                                      detail: "sha256 \(stored.sha256), reviewed on \(result.summary.hosts) hosts (\(result.summary.losingTraffic) losing traffic), \(risks.count) risks\(body.acceptRisks && !risks.isEmpty ? " accepted" : "")",
                                      remote: context.remote)
        return JSON.response(stored, status: .created)
    }
}
