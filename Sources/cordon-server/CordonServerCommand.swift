import ArgumentParser
import CordonCore
import CordonServer
import CordonWire
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging

@main
struct CordonServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cordon-server",
        abstract: "The fleet's collector: agents enroll and report to it, analysts isolate hosts through its API.",
        version: CordonVersion.current,
        subcommands: [InitCommand.self, RunCommand.self, CertificateCommand.self, EnrollSecretCommand.self, TokenCommand.self, HostCommand.self, OpenAPICommand.self]
    )

    /// One contract for both binaries: a usage error exits 2 (ArgumentParser's own is 64), any
    /// other failure 1.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                print(message)
                Glibc.exit(0)
            }
            if !message.isEmpty { FileHandle.standardError.write(Data("cordon-server: \(message)\n".utf8)) }
            if error is ExitCode { Glibc.exit(code.rawValue) }
            Glibc.exit(code == .validationFailure ? 2 : 1)
        }
    }
}

/// `--data DIR --database URL`, which every subcommand takes.
struct ServerOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The server's data directory: its CA, certificate and keys.", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("postgresql://user@host:port/db (the password from the URL or PGPASSWORD).", valueName: "url"))
    var database: String

    func validate() throws {
        _ = try databaseURL()
    }

    func databaseURL() throws -> DatabaseURL {
        do { return try DatabaseURL(database) } catch { throw ValidationError("\(error)") }
    }

    var directory: DataDirectory { DataDirectory(data) }

    static func logger() -> Logger {
        var logger = Logger(label: "cordon-server")
        logger.logLevel = .notice
        return logger
    }
}

/// A failure of a subcommand: its message on stderr, exit status 1.
struct ServerCLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The administrator at the server's shell, as the audit log names them.
func administrator() -> String {
    let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "uid \(getuid())"
    return "cordon-server CLI (\(user))"
}

/// Runs a subcommand's database work; its errors become one clear line.
func withStores<T: Sendable>(_ options: ServerOptions, _ body: @Sendable (Stores) async throws -> T) async throws -> T {
    do {
        return try await ServerApplication.withDatabase(try options.databaseURL(), logger: ServerOptions.logger(), body)
    } catch let error as ServerCLIError {
        throw error
    } catch {
        throw ServerCLIError("\(try options.databaseURL()): \(String(reflecting: error))")
    }
}
