import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import Foundation

@main
struct Cordon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cordon",
        abstract: "Host microsegmentation agent: learn what a host talks to, then allow only that.",
        discussion: "Exit codes: 0 success, 1 failure, 2 usage or invalid input; review and approve: 3 on a lockout risk.",
        version: CordonVersion.current,
        subcommands: [AgentCommand.self, StatusCommand.self, FlowsCommand.self, NamesCommand.self, ProposeCommand.self, ReviewCommand.self, ApproveCommand.self,
                      RulesetsCommand.self, RenderCommand.self, EnforceCommand.self, ConfirmCommand.self, DiscoverCommand.self,
                      IsolateCommand.self, ReleaseCommand.self, ActionsCommand.self, LogCommand.self, FleetCommand.self, DemoCommand.self]
    )

    /// ArgumentParser exits 64 on usage errors; Cordon's contract is 2 (and 1 for failures).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as CLIError {
            FileHandle.standardError.write(Data("cordon: \(error.message)\n".utf8))
            Glibc.exit(error.code)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data("cordon: \(message)\n".utf8)) }
            if error is ExitCode { Glibc.exit(code.rawValue) }
            // Anything ArgumentParser classifies as a validation failure is a usage error.
            Glibc.exit(code == .validationFailure ? 2 : 1)
        }
    }
}

/// An error with the exit code the contract gives it.
struct CLIError: Error {
    let message: String
    let code: Int32

    /// Bad input from the operator: exit 2.
    static func invalid(_ message: String) -> CLIError { CLIError(message: message, code: 2) }
    /// The command could not do its work: exit 1.
    static func failed(_ message: String) -> CLIError { CLIError(message: message, code: 1) }
}

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("SQLite database.", valueName: "path"))
    var db: String?

    @Option(help: ArgumentHelp("Agent control socket.", valueName: "path"))
    var socket: String?
}

/// Writes JSON the same way everywhere: sorted keys, so output is stable and diffable.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Writes a (possibly huge) array one element per line, each encoded on its own, with sorted
/// keys; with `key`, as the member `"key": [...]` of an enclosing object the caller writes.
/// Output goes out in 64 KiB chunks rather than a `print` per element.
func printJSONArray<T: Encodable>(_ items: [T], key: String? = nil) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    var buffer = key.map { "\"\($0)\": [" } ?? "["
    for (index, item) in items.enumerated() {
        buffer += index == 0 ? "\n  " : ",\n  "
        if let fast = item as? FastJSON {
            buffer += fast.json
        } else {
            buffer += String(decoding: try encoder.encode(item), as: UTF8.self)
        }
        if buffer.utf8.count >= 1 << 16 {
            FileHandle.standardOutput.write(Data(buffer.utf8))
            buffer = ""
        }
    }
    buffer += items.isEmpty ? "]" : "\n]"
    if key == nil { buffer += "\n" }
    FileHandle.standardOutput.write(Data(buffer.utf8))
}

/// Values that write their own JSON (see `FlowRecord.json`).
protocol FastJSON {
    var json: String { get }
}

extension FlowRecord: FastJSON {
    var json: String { json() }
}
