import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore

struct NamesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "names",
        abstract: "List the names learned from DNS answers, with their addresses (no agent needed).",
        discussion: "Names come from the answers of the configured resolvers on connections this host opened. "
            + "An address keeps a name after its TTL: EXPIRES says until when the last answer was valid."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    /// One name with every address it was answered with: the contract of `names --json`.
    struct Entry: Encodable {
        struct Address: Encodable {
            let address: String
            let firstSeen: String
            let lastSeen: String
            let expires: String
            enum CodingKeys: String, CodingKey { case address, firstSeen = "first_seen", lastSeen = "last_seen", expires }
        }
        let name: String
        let addresses: [Address]
        let firstSeen: String
        let lastSeen: String
        enum CodingKeys: String, CodingKey { case name, addresses, firstSeen = "first_seen", lastSeen = "last_seen" }
    }

    func run() throws {
        let rows: [NameRow]
        do {
            rows = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase).names()
        } catch {
            throw CLIError.failed("\(error)")
        }
        if json {
            var entries: [Entry] = []
            var index = rows.startIndex
            while index < rows.endIndex {
                let name = rows[index].name
                let group = rows[index...].prefix { $0.name == name }
                index += group.count
                entries.append(Entry(
                    name: name,
                    addresses: group.map {
                        .init(address: $0.address.description, firstSeen: TimeText.rfc3339($0.firstSeen),
                              lastSeen: TimeText.rfc3339($0.lastSeen), expires: TimeText.rfc3339($0.expires))
                    },
                    firstSeen: TimeText.rfc3339(group.map(\.firstSeen).min()!), lastSeen: TimeText.rfc3339(group.map(\.lastSeen).max()!)))
            }
            try printJSONArray(entries)
        } else if rows.isEmpty {
            print("no names learned")
        } else {
            var table = TextTable(header: ["NAME", "ADDRESS", "FIRST SEEN", "LAST SEEN", "EXPIRES"])
            for row in rows {
                table.add([row.name, row.address.description, TimeText.rfc3339(row.firstSeen), TimeText.rfc3339(row.lastSeen),
                           TimeText.rfc3339(row.expires)])
            }
            print(table.text(indent: ""), terminator: "")
        }
    }
}
