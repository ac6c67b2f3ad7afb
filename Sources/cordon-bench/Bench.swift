import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Benchmarks report numbers; they assert nothing (tests do that). Run them in a release build:
/// `swift run -c release cordon-bench ingest`.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cordon-bench",
        abstract: "Measure Cordon against the kernel's own tools, in throwaway network namespaces.",
        subcommands: [FleetBenchmark.self, ConsoleBenchmark.self, FleetOutageBenchmark.self, FleetFailoverBenchmark.self, FleetSoakBenchmark.self, FleetScaleBenchmark.self, FleetRolloutBenchmark.self, FleetProposeBenchmark.self, IngestBenchmark.self, WeekBenchmark.self, ShutdownBenchmark.self, IdleBenchmark.self, ProposeBenchmark.self, ApplyBenchmark.self,
                      PacketCostBenchmark.self, IsolateBenchmark.self, ControlBenchmark.self, RenderBenchmark.self, DNSBenchmark.self, DNSClientCommand.self, GenerateCommand.self, InjectCommand.self]
    )
}

/// The socket types `socket(2)` takes, as Linux numbers them (every architecture Cordon builds
/// for; MIPS alone differs). Named here because in a clean build of this target glibc's
/// `SOCK_STREAM`/`SOCK_DGRAM` are not found: <sys/socket.h> is also included by CordonNftables'
/// internal C module, which then owns the enum.
let streamSocket: Int32 = 1, datagramSocket: Int32 = 2, rawSocket: Int32 = 3

/// CPU time and memory of a process, from /proc.
struct ProcessSample {
    /// user + system seconds.
    let cpuSeconds: Double
    /// Peak resident set (VmHWM), bytes.
    let peakRSS: Int

    static func read(_ pid: pid_t) -> ProcessSample? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProcessSample(cpuSeconds: (user + system) / ticks, peakRSS: peakRSS(pid))
    }

    static func peakRSS(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kib * 1024
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func format(_ value: Double, _ digits: Int = 1) -> String { value.isNaN ? "-" : String(format: "%.\(digits)f", value) }

/// Monotonic seconds.
func monotonic() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// Unbuffered progress output, so a long benchmark shows where it is.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
