import ArgumentParser
import CordonFleetClient
import CordonLab
import CordonWire
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Remote time to contain: from the API request (this process, in the server's namespace,
/// over an open HTTPS connection as a SOAR playbook would hold one) to the first dropped packet
/// of an established flow on a real agent; also until the intent reads `succeeded`. Side by
/// side, the same containment by `cordon isolate` on the host itself.
struct FleetBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-contain",
                                                    abstract: "Remote time to contain through cordon-server (needs root and PostgreSQL).")

    @Option(help: "Remote isolations (each released before the next).") var runs: Int = 30
    @Option(help: "Local isolations on the host, for comparison.") var localRuns: Int = 10
    @Option(help: "Also measure the remote isolations again while host b's address holds this many idle and slow connections (0: no flood).")
    var flood: Int = 0

    static let echoPort: UInt16 = 5001

    func run() throws {
        guard (1...1000).contains(runs), (0...1000).contains(localRuns), (0...5000).contains(flood) else { throw ValidationError("runs out of range") }
        say("# cordon-bench fleet-contain --runs \(runs) --local-runs \(localRuns) --flood \(flood)")
        let lab = try Lab()
        defer { lab.cleanup() }
        let fleet = try FleetScenario(lab: lab, durableDatabase: true)
        _ = try fleet.startServer()
        let token = try fleet.token(role: "responder", name: "bench")
        _ = try fleet.startAgent(fleet.a, secretFile: try fleet.enrollSecret())
        let echo = EchoFlow()
        Thread { [echo] in _ = try? lab.inNamespace(fleet.a) { try echo.serve(port: Self.echoPort) } }.start()
        defer { echo.stop() }

        // The client's event loop threads are made on a thread inside the server's namespace, so
        // its sockets are there too.
        let remote = { (label: String) throws -> (contain: [Double], confirm: [Double]) in try lab.inNamespace(fleet.server) { () throws -> (contain: [Double], confirm: [Double]) in
            let ca = try String(contentsOfFile: fleet.caFile, encoding: .utf8)
            let client = try FleetClient(server: URL(string: "https://\(FleetScenario.serverA):\(FleetScenario.port)")!, caPEM: ca, credential: token)
            let host = try Self.wait { () async throws -> String? in
                try await client.call(.GET, "/api/v1/hosts", timeout: 10, as: Page<HostView>.self).items.first { $0.connected }?.id
            }
            var contain: [Double] = [], confirm: [Double] = []
            for run in 1...runs {
                let (cut, confirmed) = try Self.contain(lab, fleet: fleet) {
                    let accepted = try await client.call(.POST, "/api/v1/hosts/\(host)/isolation",
                                                         body: IsolationRequest(state: .isolated, reason: "bench \(run)"), timeout: 10, as: IntentAccepted.self)
                    return accepted.intentID
                } settled: { id in
                    try await client.call(.GET, "/api/v1/intents/\(id)", timeout: 10, as: IntentView.self).status != .pending
                }
                contain.append(cut)
                confirm.append(confirmed)
                say("#   remote\(label) run \(run): first dropped packet \(format(cut * 1000, 2)) ms, intent succeeded \(format(confirmed * 1000, 2)) ms after the request")
                let release = try Self.wait { () async throws -> String? in
                    try await client.call(.POST, "/api/v1/hosts/\(host)/isolation", body: IsolationRequest(state: .released, reason: "bench"),
                                          timeout: 10, as: IntentAccepted.self).intentID
                }
                let released = try Self.wait { () async throws -> IntentView? in
                    let view = try await client.call(.GET, "/api/v1/intents/\(release)", timeout: 10, as: IntentView.self)
                    return view.status == .pending ? nil : view
                }
                guard released.status == .succeeded else { throw ValidationError("release \(run): \(released.status.rawValue): \(released.error ?? "")") }
                usleep(200_000)
            }
            return (contain, confirm)
        } }
        let results = try remote("")
        var flooded: (contain: [Double], confirm: [Double]) = ([], [])
        if flood > 0 {
            // Nine in ten idle (nothing sent), one in ten slow (a request head a byte a second),
            // reopened as the server closes them, for as long as the runs take.
            let report = lab.directory + "/flood.json"
            let floodProcess = try fleet.startFlood(idle: flood - flood / 10, slow: flood / 10, seconds: Double(runs) * 3 + 60, hold: 0, report: report)
            defer { floodProcess.signal(SIGTERM) }
            while access(report + ".started", F_OK) != 0 && floodProcess.isRunning { usleep(100_000) }
            guard floodProcess.isRunning else { throw ValidationError("the flood did not start: \((try? String(contentsOfFile: report + ".log", encoding: .utf8)) ?? "")") }
            sleep(2)
            flooded = try remote(" under the flood")
        }

        var local: [Double] = []
        let dir = fleet.directory(of: fleet.a)
        for run in 0..<localRuns {
            let started = monotonic()
            let (cut, _) = try Self.contain(lab, fleet: fleet) {
                let result = try lab.run(fleet.a, [fleet.cordonBinary, "isolate", "--operator", "bench", "--socket", dir + "/cordon.sock", "--db", dir + "/cordon.db"])
                guard result.succeeded else { throw ValidationError("isolate: \(result.stderr)") }
                return ""
            } settled: { _ in true }
            _ = started
            local.append(cut)
            say("#   local run \(run + 1): first dropped packet \(format(cut * 1000, 2)) ms after `cordon isolate` started")
            let release = try lab.run(fleet.a, [fleet.cordonBinary, "release", "--operator", "bench", "--socket", dir + "/cordon.sock", "--db", dir + "/cordon.db"], timeout: 60)
            guard release.succeeded else { throw ValidationError("release: \(release.stderr)") }
            usleep(200_000)
        }

        say("| measurement | runs | median ms | p99 ms | max ms |")
        say("|---|---|---|---|---|")
        for (name, values) in [("remote: API request → first dropped packet", results.contain),
                               ("remote: API request → intent reads succeeded", results.confirm),
                               ("remote, \(flood) idle and slow connections from one address: API request → first dropped packet", flooded.contain),
                               ("remote, \(flood) idle and slow connections from one address: API request → intent reads succeeded", flooded.confirm),
                               ("local `cordon isolate` → first dropped packet", local)] where !values.isEmpty {
            say("| \(name) | \(values.count) | \(format(median(values) * 1000, 2)) | \(format(percentile(values, 0.99) * 1000, 2)) | \(format(values.max()! * 1000, 2)) |")
        }
    }

    /// Runs `request` while the web peer's flow to host a is busy; seconds from the request's
    /// start to the first datagram never echoed, and to `settled` answering true.
    static func contain(_ lab: Lab, fleet: FleetScenario, request: @escaping @Sendable () async throws -> String,
                        settled: @escaping @Sendable (String) async throws -> Bool) throws -> (Double, Double) {
        let flow = EchoFlow()
        Thread { [flow] in _ = try? lab.inNamespace(fleet.webNamespace) { try flow.run(to: FleetScenario.hostWeb, port: echoPort) } }.start()
        let started = monotonic()
        while flow.echoed == 0 && monotonic() - started < 5 { usleep(1000) }
        guard flow.echoed > 0 else { flow.stop(); throw ValidationError("the echo flow did not start") }
        usleep(50_000)
        let requestStart = monotonic()
        let confirmed = try wait { () async throws -> Double? in
            let id = try await request()
            while try await !settled(id) {
                if monotonic() - requestStart > 10 { throw ValidationError("the intent did not settle within 10 s") }
                try await Task.sleep(for: .milliseconds(2))
            }
            return monotonic() - requestStart
        }
        usleep(200_000)
        flow.stop()
        guard let firstLost = flow.firstUnanswered(after: requestStart) else { throw ValidationError("no datagram was dropped") }
        return (max(0, firstLost - requestStart), confirmed)
    }

    /// Runs async work from a plain thread; retries a nil answer for up to 20 s.
    static func wait<T: Sendable>(_ body: @escaping @Sendable () async throws -> T?) throws -> T {
        let deadline = monotonic() + 20
        while monotonic() < deadline {
            let box = Mutex<Result<T?, any Error>?>(nil)
            let done = DispatchSemaphore(value: 0)
            Task {
                do { let value = try await body(); box.withLock { $0 = .success(value) } } catch { box.withLock { $0 = .failure(error) } }
                done.signal()
            }
            done.wait()
            if let value = try box.withLock({ $0! }).get() { return value }
            usleep(100_000)
        }
        throw ValidationError("timed out")
    }
}
