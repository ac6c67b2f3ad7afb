/// A listing's `limit` and `offset`, as every paged route reads them.
enum Paging {
    static func parse(limit: String?, offset: String?, largest: Int, defaultLimit: Int) throws -> (offset: Int, limit: Int) {
        guard let limit = limit.map({ Int($0) }) ?? defaultLimit, (1...largest).contains(limit) else {
            throw APIFailure(.badRequest, "expected 1-\(largest)", field: "limit")
        }
        guard let offset = offset.map({ Int($0) }) ?? 0, offset >= 0 else { throw APIFailure(.badRequest, "expected 0 or more", field: "offset") }
        return (offset, limit)
    }
}
