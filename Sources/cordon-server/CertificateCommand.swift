import ArgumentParser
import CordonServer
import Foundation

/// `cordon-server certificate renew`: the serving certificate expires after two years; the CA,
/// which every agent trusts, stays.
struct CertificateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certificate",
        abstract: "Rotate the server's serving certificate.",
        subcommands: [Renew.self]
    )

    struct Renew: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new server certificate and key from the existing CA (agents keep trusting ca.pem).",
            discussion: """
                Replaces DIR/server.pem and DIR/server-key.pem (the old ones stay as .old). Restart each \
                replica afterwards (`systemctl restart cordon-server`): it reads them at start. Agents \
                reconnect by themselves.
                """
        )

        @Option(help: ArgumentHelp("The server's data directory.", valueName: "dir"))
        var data: String

        @Option(help: ArgumentHelp("A DNS name or IP address agents reach the server by (repeatable; all of them, as at init).",
                                   valueName: "name"))
        var name: [String] = []

        func validate() throws {
            guard !name.isEmpty else { throw ValidationError("give every --name agents use in --server, as at init") }
        }

        func run() throws {
            let directory = DataDirectory(data)
            do {
                let renewed = try CertificateAuthority.renew(caPEM: try directory.read(directory.caCertificate),
                                                             caKeyPEM: try directory.read(directory.caKey), names: name)
                try directory.replaceServing(certificatePEM: renewed.certificatePEM, keyPEM: renewed.keyPEM)
            } catch {
                throw ServerCLIError("certificate renew: \(error)")
            }
            print("server certificate: \(directory.certificate) for \(name.joined(separator: ", ")), valid two years")
            print("restart each replica to serve it; the previous pair is kept as server.pem.old and server-key.pem.old")
        }
    }
}
