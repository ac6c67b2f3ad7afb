import ArgumentParser
import CordonAgent
import CordonCore
import Foundation

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the agent in the foreground (discovery: record flows, block nothing).",
        discussion: "Stops on SIGTERM or SIGINT after flushing everything to the database."
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("YAML config file (database, socket, flush_interval, remote_cap, receive_buffer_mib).",
                               valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Seconds between writes to the database (default 2).", valueName: "seconds"))
    var flushInterval: Double?

    func validate() throws {
        if let flushInterval, !AgentConfig.flushIntervalRange.contains(flushInterval) {
            throw ValidationError("--flush-interval must be between \(AgentConfig.flushIntervalRange.lowerBound) and \(AgentConfig.flushIntervalRange.upperBound) seconds")
        }
    }

    func run() throws {
        var settings = AgentConfig()
        if let config {
            do { settings = try AgentConfig.load(path: config) } catch let error as ConfigError {
                throw CLIError.invalid(error.description)
            }
        }
        if let db = global.db { settings.database = db }
        if let socket = global.socket { settings.socket = socket }
        if let flushInterval { settings.flushInterval = flushInterval }

        let agent = Agent(config: settings) { message in
            FileHandle.standardError.write(Data("\(TimeText.rfc3339(TimeText.now())) cordon agent: \(message)\n".utf8))
        }
        do {
            try agent.run()
        } catch {
            throw CLIError.failed("agent: \(error)")
        }
    }
}
