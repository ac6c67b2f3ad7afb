import ArgumentParser
import CordonServer

struct OpenAPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "openapi",
        abstract: "Print the API's OpenAPI 3.1 document (what GET /api/v1/openapi.json serves)."
    )

    func run() throws {
        print(OpenAPIDocument.json)
    }
}
