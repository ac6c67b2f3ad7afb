import ArgumentParser
import CordonCore
import CordonFleetClient
import CordonWire
import Foundation
import Yams

struct FleetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Look at, isolate, tag and set the policy of the hosts of a fleet through cordon-server's API.",
        discussion: """
            The server, its CA and the API token come from --server/--ca/--token-file, else from \
            CORDON_SERVER, CORDON_CA and CORDON_TOKEN (or CORDON_TOKEN_FILE), else from the config file \
            (--config, default ~/.config/cordon/fleet.yaml with keys server, ca, token_file).
            """,
        subcommands: [FleetHostsCommand.self, FleetShowCommand.self, FleetIsolateCommand.self, FleetReleaseCommand.self,
                      FleetIntentsCommand.self, FleetLogCommand.self, FleetTagsCommand.self,
                      FleetProposeCommand.self, FleetReviewCommand.self, FleetApproveCommand.self, FleetAssignCommand.self, FleetUnassignCommand.self, FleetRulesetsCommand.self,
                      FleetRolloutCommand.self, FleetDiscoverCommand.self]
    )
}

/// Where the API is and who is asking.
struct FleetOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The server, e.g. https://cordon.example:8443.", valueName: "url"))
    var server: String?

    @Option(help: ArgumentHelp("The server's CA certificate (its ca.pem).", valueName: "file"))
    var ca: String?

    @Option(name: .customLong("token-file"), help: ArgumentHelp("File holding the API token (kept out of `ps`).", valueName: "file"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("Config file with server, ca and token_file.", valueName: "file"))
    var config: String?

    @Flag(help: "Print JSON.")
    var json = false

    /// The client, from flags, then the environment, then the config file; each missing piece named.
    func client(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> FleetClient {
        var file: [String: String] = [:]
        let configPath = config ?? environment["HOME"].map { $0 + "/.config/cordon/fleet.yaml" }
        if let configPath, FileManager.default.fileExists(atPath: configPath) {
            do {
                let text = try String(contentsOfFile: configPath, encoding: .utf8)
                guard let mapping = try Yams.load(yaml: text) as? [String: Any] else { throw CLIError.invalid("\(configPath): expected a mapping") }
                for (key, value) in mapping {
                    guard ["server", "ca", "token_file"].contains(key), let value = value as? String else {
                        throw CLIError.invalid("\(configPath): \(key): unknown setting or not a string; valid: server, ca, token_file")
                    }
                    file[key] = value
                }
            } catch let error as CLIError { throw error } catch {
                throw CLIError.invalid("\(configPath): \(error)")
            }
        } else if config != nil {
            throw CLIError.invalid("--config \(config!): no such file")
        }
        guard let serverText = server ?? environment["CORDON_SERVER"] ?? file["server"] else {
            throw CLIError.invalid("no server: give --server https://HOST:PORT (or CORDON_SERVER, or server: in the config file)")
        }
        guard let url = URL(string: serverText), url.scheme == "https" else { throw CLIError.invalid("server '\(serverText)': expected https://HOST:PORT") }
        guard let caPath = ca ?? environment["CORDON_CA"] ?? file["ca"] else {
            throw CLIError.invalid("no CA: give --ca FILE, the server's ca.pem (or CORDON_CA, or ca: in the config file)")
        }
        var token = environment["CORDON_TOKEN"]
        if let path = tokenFile ?? (token == nil ? environment["CORDON_TOKEN_FILE"] ?? file["token_file"] : nil) {
            do { token = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) } catch {
                throw CLIError.invalid("token file \(path): \((error as NSError).localizedDescription)")
            }
        }
        guard let token, !token.isEmpty else {
            throw CLIError.invalid("no API token: give --token-file FILE (or CORDON_TOKEN, CORDON_TOKEN_FILE, or token_file: in the config file)")
        }
        let caPEM: String
        do { caPEM = try String(contentsOfFile: caPath, encoding: .utf8) } catch {
            throw CLIError.invalid("CA file \(caPath): \((error as NSError).localizedDescription)")
        }
        do { return try FleetClient(server: url, caPEM: caPEM, credential: token) } catch { throw CLIError.invalid("\(error)") }
    }
}

/// Runs the API calls of a synchronous subcommand (the main thread is never one of the pool's).
func awaiting<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { result.set(.success(try await body())) } catch { result.set(.failure(error)) }
        done.signal()
    }
    done.wait()
    switch result.get()! {
    case .success(let value): return value
    case .failure(let error as FleetError): throw CLIError.failed("\(error)")
    case .failure(let error): throw error
    }
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    private var value: Result<T, any Error>?
    private let lock = NSLock()
    func set(_ v: Result<T, any Error>) { lock.withLock { value = v } }
    func get() -> Result<T, any Error>? { lock.withLock { value } }
}

extension FleetClient {
    /// Every host (or those `selector` matches), page by page, and how many there are.
    func hosts(selector: String?) async throws -> (items: [HostView], total: Int) {
        var items: [HostView] = []
        var total = 0
        repeat {
            var path = "/api/v1/hosts?limit=1000&offset=\(items.count)"
            if let selector { path += "&selector=" + Self.queryValue(selector) }
            let page = try await call(.GET, path, timeout: 30, as: Page<HostView>.self)
            items += page.items
            total = page.total ?? items.count
            if page.items.isEmpty { break }
        } while items.count < total
        return (items, total)
    }

    /// A query parameter's value: only unreserved characters pass (a selector holds quotes,
    /// `&&`, braces and spaces).
    static func queryValue(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// A host by id, or by host name when exactly one host has it.
    func resolveHost(_ text: String) async throws -> HostView {
        if UUID(uuidString: text) != nil {
            return try await call(.GET, "/api/v1/hosts/\(text.lowercased())", timeout: 15, as: HostView.self)
        }
        let hosts = try await hosts(selector: nil).items.filter { $0.hostname == text }
        guard hosts.count == 1 else {
            // Anyone with an enrollment secret can enroll a second host under a name: say which is which.
            let candidates = hosts.map { h in
                "\(h.id) (enrolled \(h.enrolledAt), addresses \(h.addresses.joined(separator: " ")))\(h.duplicateMachineID ? ", shares its machine id" : "")"
            }
            throw CLIError.failed(hosts.isEmpty ? "no host named '\(text.terminalSafe)'"
                : "\(hosts.count) hosts are named '\(text.terminalSafe)' (one may be an impostor): give the id; \(candidates.joined(separator: "; ").terminalSafe)")
        }
        return hosts[0]
    }
}

extension IsolationView {
    var summary: String {
        let observed = self.observed?.rawValue ?? "not reported"
        let pending = pendingSince.map { ", pending since \($0)" } ?? ""
        return "desired \(desired.rawValue) (generation \(generation)), observed \(observed) (generation \(observedGeneration))\(pending)"
    }
}
