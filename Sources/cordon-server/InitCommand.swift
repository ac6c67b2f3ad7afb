import ArgumentParser
import CordonServer
import Foundation

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the CA, the server's certificate and the first admin token.",
        discussion: """
            Writes DIR/ca.pem (the one file agents and analysts are given to trust), DIR/ca-key.pem, \
            DIR/server.pem and DIR/server-key.pem (keys 0600), migrates the database, and prints an \
            admin API token as the last line. The token is shown once; the server keeps only its hash.
            """
    )

    @OptionGroup var options: ServerOptions

    @Option(help: ArgumentHelp("A DNS name or IP address agents reach the server by (repeatable).", valueName: "name"))
    var name: [String] = []

    func validate() throws {
        guard !name.isEmpty else { throw ValidationError("give at least one --name: the address or name agents use in --server") }
    }

    func run() async throws {
        let directory = options.directory
        do {
            try directory.write(try CertificateAuthority.create(names: name))
        } catch {
            throw ServerCLIError("\(error)")
        }
        let created = try await withStores(options) { stores in try await stores.tokens.create(name: "admin", role: .admin) }
        print("CA certificate: \(directory.caCertificate) (give this file to agents and analysts)")
        print("server certificate: \(directory.certificate) for \(name.joined(separator: ", "))")
        print("admin API token (shown once; the server keeps only its hash):")
        print(created.token)
    }
}
