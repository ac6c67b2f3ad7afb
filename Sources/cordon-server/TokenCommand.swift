import ArgumentParser
import CordonServer
import CordonWire
import Foundation

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "API tokens for analysts and playbooks.",
        subcommands: [Create.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API token; it is printed once, as the last line.")

        @OptionGroup var options: ServerOptions

        @Option(help: ArgumentHelp("viewer (reads), responder (also isolates and releases), approver, or admin.", valueName: "role"))
        var role: String

        @Option(help: ArgumentHelp("Who holds it: the audit log names every change by it.", valueName: "name"))
        var name: String

        func validate() throws {
            guard Role(rawValue: role) != nil else { throw ValidationError("--role '\(role)': expected viewer, responder, approver or admin") }
            guard !name.isEmpty, name.utf8.count <= 100 else { throw ValidationError("--name: expected 1-100 characters") }
        }

        func run() async throws {
            let role = Role(rawValue: self.role)!
            let name = self.name
            let created = try await withStores(options) { stores in
                let created = try await stores.tokens.create(name: name, role: role)
                try await stores.audit.record(actor: administrator(), role: nil, action: "token create", target: created.id.uuidString.lowercased(),
                                              detail: "\(role.rawValue) token for \(name)", remote: nil)
                return created
            }
            print("\(role.rawValue) token \(created.id.uuidString.lowercased()) for \(name) (shown once):")
            print(created.token)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke the tokens with this name or id; they are refused at once.")

        @OptionGroup var options: ServerOptions

        @Argument(help: ArgumentHelp("The token's name or id.", valueName: "name-or-id"))
        var token: String

        func run() async throws {
            let token = self.token
            let count = try await withStores(options) { stores in
                let count = try await stores.tokens.revoke(token)
                if count > 0 { try await stores.audit.record(actor: administrator(), role: nil, action: "token revoke", target: token, detail: "\(count) revoked", remote: nil) }
                return count
            }
            guard count > 0 else { throw ServerCLIError("no active token named or with id '\(token)'") }
            print("revoked \(count) token\(count == 1 ? "" : "s")")
        }
    }
}

struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Enrolled hosts.",
        subcommands: [Revoke.self]
    )

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a host's credential: its agent is refused from now on, and says so in `cordon status`.")

        @OptionGroup var options: ServerOptions

        @Argument(help: ArgumentHelp("The host's id.", valueName: "host-id"))
        var host: String

        func validate() throws {
            guard UUID(uuidString: host) != nil else { throw ValidationError("'\(host)': expected a host id (a UUID, see GET /api/v1/hosts)") }
        }

        func run() async throws {
            let id = UUID(uuidString: host)!
            guard try await withStores(options, { stores in
                let revoked = try await stores.enrollment.revokeHost(id)
                if revoked { try await stores.audit.record(actor: administrator(), role: nil, action: "host revoke", target: id.uuidString.lowercased(), detail: "", remote: nil) }
                return revoked
            }) else {
                throw ServerCLIError("no host with id \(host)")
            }
            print("host \(host) revoked")
        }
    }
}
