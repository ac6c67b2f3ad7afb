/// The API's OpenAPI 3.1 description, served at /api/v1/openapi.json. Its one source is
/// `openapi.json` beside this file, compiled into the binary (SwiftPM's `embedInCode`), so the
/// server serves exactly the file that is reviewed; Docs/openapi.json links to it.
public enum OpenAPIDocument {
    /// Without the file's final newline: what the server has always served.
    public static let json: String = {
        var text = String(decoding: PackageResources.openapi_json, as: UTF8.self)
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }()
}
