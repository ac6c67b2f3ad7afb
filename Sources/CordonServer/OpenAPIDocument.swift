/// The API's OpenAPI 3.1 description, served at /api/v1/openapi.json (Docs/openapi.json is the same text).
enum OpenAPIDocument {
    static let json = #"{"openapi":"3.1.0","info":{"title":"cordon-server","version":"1"},"paths":{}}"#
}
