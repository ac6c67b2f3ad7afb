import ArgumentParser
import CordonServer
import Foundation
import Hummingbird
import Logging

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve agents and the API over HTTPS.",
        discussion: "Several replicas may run against one database; a change made on one reaches agents connected to another."
    )

    @OptionGroup var options: ServerOptions

    @Option(help: ArgumentHelp("Address and port to listen on, e.g. 0.0.0.0:8443 or [::]:8443.", valueName: "addr:port"))
    var listen: String

    func validate() throws {
        _ = try address()
    }

    func address() throws -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen '\(listen)': expected address:port, e.g. 0.0.0.0:8443")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("--listen '\(listen)': expected address:port") }
        return (host, port)
    }

    func run() async throws {
        let (host, port) = try address()
        let logger = ServerOptions.logger()
        let settings = ServerSettings(data: options.directory, database: try options.databaseURL(), host: host, port: port)
        do {
            let app = try await ServerApplication.build(settings, logger: logger) { port in
                logger.notice("serving https on \(host):\(port), database \(settings.database)")
            }
            try await app.runService()
        } catch {
            throw ServerCLIError("cordon-server run: \(error)")
        }
    }
}
