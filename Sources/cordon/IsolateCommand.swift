import ArgumentParser
import CordonAgent
import CordonCore
import CordonNftables
import CordonStore
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct IsolateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "isolate",
        abstract: "Emergency: cut the host off from everything but its management channel.",
        discussion: """
            Adds the overlay table inet cordon_isolate (priority -10): only the collectors, DNS to the \
            resolvers and the extra whitelist pass, both ways; everything else is dropped, established \
            connections included. The base mode (discovery or enforce) stays underneath. Through the \
            agent; when no agent runs (nobody holds the database's lock), applied directly with the \
            management channel the agent last installed (or --config), and recorded for the agent to \
            adopt; when the database cannot be written (a full disk) the host is isolated all the same, \
            exit 0, and standard error says it is NOT recorded. Isolating an isolated host is a recorded no-op.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: EmergencyOptions

    func run() throws {
        try emergency(global, options, command: "isolate") { runner, store in
            Emergency.isolate(runner: runner, store: store, operator: options.operatorName, reason: options.reason,
                              via: "directly from the CLI (no agent answered)")
        }
    }
}

/// What isolate and release both take.
struct EmergencyOptions: ParsableArguments {
    @Option(name: .customLong("operator"), help: ArgumentHelp("Who does it (recorded).", valueName: "name"))
    var operatorName: String

    @Option(help: ArgumentHelp("Why (recorded).", valueName: "text"))
    var reason: String = ""

    @Option(help: ArgumentHelp("Without an agent: take the management channel from this agent config file.", valueName: "file"))
    var config: String?

    func validate() throws {
        guard !operatorName.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--operator must name someone") }
    }
}

/// Sends an isolation command to the agent; when there is truly none (nobody holds the
/// database's lock), does it here through a runner of its own on the same database, holding that
/// lock meanwhile so that no agent starts under it. Exit 1 when the answer is a failure; an
/// isolation the database could not record exits 0 (the host is isolated) and says so on stderr.
func emergency(_ global: GlobalOptions, _ options: EmergencyOptions, command: String,
               direct: (TransitionRunner, FlowStore) -> ControlAnswer) throws {
    let request: ControlCommand = command == "release" ? .release(operator: options.operatorName, reason: options.reason)
        : .isolate(operator: options.operatorName, reason: options.reason)
    let socket = global.socket ?? AgentConfig.defaultSocket
    var answer: ControlAnswer?
    var why = ""
    do {
        answer = try ControlClient(path: socket).command(request, timeoutSeconds: command == "release" ? 60 : 10)
    } catch let error as AgentError {
        switch error {
        case .notRunning(_, let reason): why = "no agent answers on \(socket) (\(reason))"
        case .untrustedSocket: why = "\(error)"
        default: throw CLIError.failed("\(error)")
        }
    } catch {
        throw CLIError.failed("\(error)")
    }
    if answer == nil {
        guard geteuid() == 0 else { throw CLIError.failed("\(why); acting without the agent needs root") }
        let database = global.db ?? AgentConfig.defaultDatabase
        do {
            // Opened to read only when it cannot be written (a full disk): isolation needs the
            // management channel, not the record; a release is refused below.
            let store = try FlowStore.readingIfNotWriting(existing: database)
            let lock: ProcessLock
            do { lock = try ProcessLock(path: database + ".lock", guarding: "database \(database)", holder: "cordon \(command)") }
            catch AgentError.alreadyRunning(_, let holder) {
                throw CLIError.failed("""
                    \(why), but pid \(holder) holds \(database): an agent applies commands itself, another command is acting; \
                    nothing changed. If an agent is hung, stop it and run this again
                    """)
            }
            if let unwritable = store.unwritable, command == "release" {
                throw CLIError.failed("""
                    \(why), and the database at \(database) cannot be written (\(unwritable)): a release must be on record before \
                    it loosens anything; nothing changed. Make the database writable (free space) and run this again
                    """)
            }
            let channel = try persistedManagement(store: store, config: options.config, required: true)
            let group = try store.persistedLogGroup() ?? CordonTables.defaultLogGroup
            FileHandle.standardError.write(Data("cordon: \(why); acting directly\n".utf8))
            let runner = try TransitionRunner(backend: NftablesBackend(), store: store, environment: .init(management: { channel }, logGroup: group),
                                              logger: Logger(label: "cordon"))
            answer = withExtendedLifetime(lock) {
                // No agent holds the database: a check it left running will never answer.
                runner.tick()
                return direct(runner, store)
            }
            // The agent retries a write that failed; this process ends now, so it says what the
            // database does not hold, on standard error where an operator's script looks.
            if answer?.ok == true, runner.unrecorded {
                let problem = store.unwritable ?? FlowStore.filesystemProblem(beside: database) ?? "its writes failed, see the warning"
                let outcome = command == "release"
                    ? "released; NOT recorded: the database at \(database) cannot be written (\(problem)). The agent goes by the record "
                        + "when it starts (isolated again if it says isolated); release again once the database can be written"
                    : "isolated; NOT recorded: the database at \(database) cannot be written (\(problem)). The kernel holds the isolation; "
                        + "the agent adopts it when it starts"
                FileHandle.standardError.write(Data("cordon: \(outcome)\n".utf8))
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError.failed("\(error)")
        }
    }
    guard let answer, answer.ok else { throw CLIError.failed(answer?.message ?? "no answer") }
    print(answer.message)
}

/// The management channel the agent last installed (the database), or an agent config file's.
/// - Parameter required: isolation without an agent: a database that holds no channel is an
///   error rather than the defaults (no collectors), which would cut the host off its collector.
func persistedManagement(store: FlowStore, config: String?, required: Bool = false) throws -> ManagementChannel {
    if let config {
        do { return try AgentConfig.load(path: config).effectiveManagement() } catch let error as ConfigError {
            throw CLIError.invalid(error.description)
        }
    }
    if let channel = try store.persistedManagement() { return channel }
    guard !required else {
        throw CLIError.failed("\(store.path) holds no management channel (no agent has started on it); nothing changed. "
                              + "Give --config FILE with the collectors to keep, or check --db")
    }
    return AgentConfig().effectiveManagement()
}
