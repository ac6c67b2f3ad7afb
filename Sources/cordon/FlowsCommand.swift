import ArgumentParser
import CordonAgent
import CordonCore
import CordonStore

struct FlowsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flows",
        abstract: "List recorded flow aggregates from the database (no agent needed)."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: ArgumentHelp("inbound, outbound or forward.", valueName: "direction"))
    var direction: String?

    @Option(name: .customLong("protocol"), help: ArgumentHelp("tcp, udp, icmp, icmpv6 or a number.", valueName: "protocol"))
    var transport: String?

    @Option(help: ArgumentHelp("Service port: local for inbound, remote for outbound.", valueName: "port"))
    var port: String?

    @Option(help: ArgumentHelp("Only flows seen within this span, e.g. 90s, 15m, 2h, 7d.", valueName: "span"))
    var since: String?

    @Option(help: ArgumentHelp("allowed, or rejected (what enforcement refused).", valueName: "verdict"))
    var verdict: String?

    func validate() throws {
        _ = try filter()
    }

    /// Parses the filter options; each error names the option and what would be valid.
    func filter() throws -> FlowFilter {
        var filter = FlowFilter()
        if let direction {
            guard let value = Direction(rawValue: direction) else {
                throw ValidationError("--direction '\(direction)': expected inbound, outbound or forward")
            }
            filter.direction = value
        }
        if let transport {
            guard let value = IPProtocolNumber.parse(transport) else {
                throw ValidationError("--protocol '\(transport)': expected tcp, udp, icmp, icmpv6 or a number 0-255")
            }
            filter.transport = value
        }
        if let port {
            guard let value = UInt16(port) else { throw ValidationError("--port '\(port)': expected a number 0-65535") }
            filter.port = value
        }
        if let verdict {
            guard let value = FlowVerdict(rawValue: verdict) else {
                throw ValidationError("--verdict '\(verdict)': expected allowed or rejected")
            }
            filter.verdict = value
        }
        if let since {
            guard let span = TimeText.duration(since) else {
                throw ValidationError("--since '\(since)': expected a number with s, m, h, d or w, e.g. 2h or 7d")
            }
            filter.seenSince = TimeText.now() - span
        }
        return filter
    }

    func run() throws {
        let records: [FlowRecord]
        do {
            let store = try FlowStore(readingFrom: global.db ?? AgentConfig.defaultDatabase)
            records = try store.records(matching: try filter())
        } catch {
            throw CLIError.failed("\(error)")
        }
        if json {
            try printJSONArray(records)
        } else if records.isEmpty {
            print("no flows recorded\(direction != nil || transport != nil || port != nil || since != nil || verdict != nil ? " that match" : "")")
        } else {
            print(FlowRecord.table(records), terminator: "")
        }
    }
}
