import Foundation

extension ServiceNames {
    /// The host's /etc/services, or no names when it is missing (minimal containers).
    public static func system() -> ServiceNames {
        (try? String(contentsOfFile: "/etc/services", encoding: .utf8)).map(ServiceNames.init(servicesFile:)) ?? ServiceNames()
    }
}

/// Where the standard networks file is found: an explicit path, else the installed copies, else
/// the `Rulesets/` directory of the source tree the binary was built in (development and demo).
public enum StandardNetworks {
    public static let fileName = "standard-networks.yaml"
    public static let installed = ["/etc/cordon/\(fileName)", "/usr/share/cordon/\(fileName)"]

    public static func locate(explicit: String? = nil) -> String? {
        if let explicit { return explicit }
        for path in installed where FileManager.default.isReadableFile(atPath: path) { return path }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent("Rulesets/\(fileName)").path
            if FileManager.default.isReadableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return nil
    }

    /// Reads and validates the file; errors are `RulesetError`s that locate the problem.
    public static func load(explicit: String? = nil) throws -> Ruleset {
        guard let path = locate(explicit: explicit) else {
            throw RulesetError(file: installed[0], line: 1, column: 1, field: "(file)",
                               message: "standard networks not found; install Rulesets/\(fileName) there or pass --networks FILE")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw RulesetError(file: path, line: 1, column: 1, field: "(file)", message: "cannot read: \(error.localizedDescription)")
        }
        return try RulesetParser.parse(text, file: path)
    }
}
