import CordonCore
import CordonWire

/// Selectors as the API takes them: parsed once per request, evaluated over the host directory
/// (every host's tags in memory: 10,000 hosts are a few megabytes, and a selector is a walk over
/// a small tree per host, so SQL would add nothing but a second evaluator to keep in step).
enum HostSelection {
    /// A query parameter or body field as a selector; a parse error is a 400 naming the field and
    /// the column.
    static func parse(_ text: String, field: String = "selector") throws -> Selector {
        do { return try Selector(parsing: text) } catch {
            throw APIFailure(.badRequest, "\(error)", field: field)
        }
    }

    /// `agent(...)` names hosts by their host name on the server: the id a ruleset file's
    /// `appliesTo.agents` held on a host.
    static func matching(_ selector: Selector, in directory: [HostEntry]) -> [HostEntry] {
        directory.filter { selector.matches($0.tags, agent: $0.hostname) }
    }
}
