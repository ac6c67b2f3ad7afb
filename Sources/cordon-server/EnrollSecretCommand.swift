import ArgumentParser
import CordonCore
import CordonServer
import CordonWire
import Foundation

struct EnrollSecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll-secret",
        abstract: "Enrollment secrets, which admit agents.",
        subcommands: [Create.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an enrollment secret; it is printed once, as the last line.",
            discussion: "Hosts that enroll with it get its tags. It expires after --ttl and admits at most --uses hosts."
        )

        @OptionGroup var options: ServerOptions

        @Option(help: ArgumentHelp("Tags the enrolled hosts get, e.g. tier=web,env=prod.", valueName: "k=v,..."))
        var tags: String = ""

        @Option(help: ArgumentHelp("How long it admits hosts, e.g. 24h or 7d (default 24h).", valueName: "span"))
        var ttl: String = "24h"

        @Option(help: ArgumentHelp("How many hosts it admits (default: any number until it expires).", valueName: "n"))
        var uses: Int?

        @Option(name: .customLong("extra-allow"),
                help: ArgumentHelp("What its hosts keep open while isolated, as the agent's --extra-allow (repeatable), e.g. tcp/198.51.100.5:88.",
                                   valueName: "proto/addr[:port]"))
        var extraAllow: [String] = []

        @Flag(name: .customLong("no-host-tags"), help: "Ignore the tags agents give themselves: hosts it admits carry the secret's tags only.")
        var noHostTags = false

        func validate() throws {
            do { _ = try Tags.parse(tags) } catch { throw ValidationError("--\(error)") }
            guard TimeText.duration(ttl) != nil else { throw ValidationError("--ttl '\(ttl)': expected a number with s, m, h, d or w, e.g. 24h") }
            if let uses, uses < 1 { throw ValidationError("--uses must be at least 1") }
            for entry in extraAllow {
                do { _ = try ManagementChannel.extra(entry) } catch { throw ValidationError("\(error)") }
            }
        }

        func run() async throws {
            let tags = try Tags.parse(self.tags)
            let ttl = TimeText.duration(self.ttl)
            let uses = self.uses
            let hostTags = !noHostTags
            let extra = extraAllow
            let secret = try await withStores(options) { stores in
                let secret = try await stores.enrollment.createSecret(tags: tags, ttlSeconds: ttl, uses: uses, hostTags: hostTags, extraWhitelist: extra)
                try await stores.audit.record(actor: administrator(), role: nil, action: "enroll-secret create", target: nil,
                                              detail: "tags \(tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")), ttl \(ttl ?? 0) s, uses \(uses.map(String.init) ?? "any"), host tags \(hostTags ? "accepted" : "ignored"), extra whitelist \(extra.isEmpty ? "none" : extra.joined(separator: " "))",
                                              remote: nil)
                return secret
            }
            print("enrollment secret (shown once; expires in \(self.ttl)\(uses.map { ", admits \($0) host\($0 == 1 ? "" : "s")" } ?? "")):")
            print(secret)
        }
    }
}
