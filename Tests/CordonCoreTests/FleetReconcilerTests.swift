import CordonAgent
import CordonCore
import CordonWire
import Foundation
import Testing

/// The agent's decisions on the server's document, with no root, kernel or network.
@Suite struct FleetReconcilerTests {
    static func document(_ state: IsolationWord, origin: DesiredState.Origin = .server, generation: Int64 = 3, intent: String? = "i-1",
                         by: String = "rita") -> DesiredState {
        DesiredState(generation: generation, isolation: .init(state: state, origin: origin, intentID: intent, reason: "alert 42", requestedBy: by))
    }
    static let released = HostState()
    static let isolated = HostState(isolation: IsolationState(isolated: true, since: 1_700_000_000, operator: "ivy", reason: "local emergency"))

    @Test("an analyst's isolation of a released host is one isolate, named after the analyst, with the intent in its reason")
    func isolates() {
        let plan = FleetReconciler.plan(Self.document(.isolated), host: Self.released)
        #expect(plan == .apply([Engine.Request(.isolate(reason: "alert 42 (intent i-1)", via: "from cordon-server"), operator: "cordon-server: rita")]))
    }

    @Test("a release of an isolated host is one release; the same state again is in sync")
    func releasesAndKeeps() {
        #expect(FleetReconciler.plan(Self.document(.released, intent: nil), host: Self.isolated)
                == .apply([Engine.Request(.release(reason: "alert 42"), operator: "cordon-server: rita")]))
        #expect(FleetReconciler.plan(Self.document(.isolated), host: Self.isolated) == .inSync)
        #expect(FleetReconciler.plan(Self.document(.released), host: Self.released) == .inSync)
        #expect(FleetReconciler.plan(.initial, host: Self.released) == .inSync)
    }

    @Test("the host's own change echoed back is never applied, even when the host has changed again since")
    func echoes() {
        // The server adopted a local isolation; the host was released locally afterwards.
        #expect(FleetReconciler.plan(Self.document(.isolated, origin: .local), host: Self.released) == .echo)
        #expect(FleetReconciler.satisfied(Self.document(.isolated, origin: .local), host: Self.isolated))
        #expect(!FleetReconciler.satisfied(Self.document(.isolated, origin: .local), host: Self.released),
                "a later local release is reported, not taken as the server's wish done")
        #expect(!FleetReconciler.satisfied(Self.document(.isolated), host: Self.released))
        #expect(FleetReconciler.satisfied(Self.document(.released), host: Self.released))
    }

    @Test("a document with a mode or a policy this agent cannot apply fails its generation instead of passing for done")
    func refusesWhatItCannotDo() {
        var document = Self.document(.released)
        document.mode = ModeIntent(mode: .enforce, intentID: "m-1", confirmWithin: 120)
        guard case .refuse(let why) = FleetReconciler.plan(document, host: Self.released) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(why.contains("mode or policy"))
        #expect(!FleetReconciler.satisfied(document, host: Self.released))
    }

    @Test("a new extra whitelist re-installs the management channel where it is in the kernel (isolated or enforcing), and only there")
    func whitelist() {
        let reinstall = Engine.Request(.tampered("the management channel changed: the server's extra whitelist"))
        #expect(FleetReconciler.reinstall(host: Self.isolated) == reinstall)
        #expect(FleetReconciler.reinstall(host: HostState(enforcement: EnforcementState(mode: .enforce, version: 2))) == reinstall)
        // Released and in discovery: nothing of the channel is in the kernel; the next isolate or enforce installs it.
        #expect(FleetReconciler.reinstall(host: Self.released) == nil)
        let parsed = FleetReconciler.whitelist(["tcp/198.51.100.5:88", "tcp/192.0.2.7/24"])
        #expect(parsed.endpoints.count == 1 && parsed.invalid.count == 1 && parsed.invalid[0].contains("host bits"))
    }

    @Test("an isolation that arrives while a release is being checked is put in again, never taken as there; nothing counts as done mid-release")
    func isolationDuringReleaseCheck() {
        var releasing = Self.isolated
        releasing.isolation.releasing = "checking the collectors"
        #expect(FleetReconciler.plan(Self.document(.isolated), host: releasing)
                == .apply([Engine.Request(.isolate(reason: "alert 42 (intent i-1)", via: "from cordon-server"), operator: "cordon-server: rita")]))
        #expect(!FleetReconciler.satisfied(Self.document(.isolated), host: releasing))
        #expect(!FleetReconciler.satisfied(Self.document(.released), host: releasing))
        #expect(FleetReconciler.plan(Self.document(.isolated), host: Self.isolated) == .inSync)
    }

    @Test("a local change is reported only when settled and different from what the server knows; a release under check is not yet one")
    func localChanges() {
        let change = FleetReconciler.localChange(host: Self.isolated, known: .released, settled: true, sequence: 9, now: 5)
        #expect(change == LocalIsolationChange(state: .isolated, operator: "ivy", reason: "local emergency", at: 1_700_000_000, sequence: 9))
        #expect(FleetReconciler.localChange(host: Self.isolated, known: nil, settled: true, sequence: 9, now: 5)?.state == .isolated,
                "before the first report the server knows the host as released")
        #expect(FleetReconciler.localChange(host: Self.isolated, known: .isolated, settled: true, sequence: 9, now: 5) == nil)
        #expect(FleetReconciler.localChange(host: Self.isolated, known: .released, settled: false, sequence: 9, now: 5) == nil,
                "a server's apply in flight is not the host's own doing")
        var releasing = Self.isolated
        releasing.isolation.releasing = "checking the collectors"
        #expect(FleetReconciler.localChange(host: releasing, known: .released, settled: true, sequence: 9, now: 5) == nil)
        let bare = FleetReconciler.localChange(host: HostState(isolation: IsolationState(isolated: true)), known: .released, settled: true,
                                               sequence: nil, now: 77)
        #expect(bare?.operator == "local" && bare?.at == 77)
    }

    @Test("the document's JSON: every field written, nulls included; the legacy view marks a local change as agents before 0.3.0 expect")
    func wire() throws {
        var document = Self.document(.isolated, origin: .local, by: "ivy")
        document.isolation.extraWhitelist = ["tcp/198.51.100.5:88"]
        let object = try #require(try JSONSerialization.jsonObject(with: Wire.encode(document)) as? [String: Any])
        #expect(Set(object.keys) == ["generation", "isolation", "mode", "policy"])
        #expect(object["mode"] is NSNull && object["policy"] is NSNull)
        let isolation = try #require(object["isolation"] as? [String: Any])
        #expect(isolation["origin"] as? String == "local" && isolation["extra_whitelist"] as? [String] == ["tcp/198.51.100.5:88"])
        #expect(try Wire.decode(DesiredState.self, from: Wire.encode(document)) == document)
        #expect(document.legacy.requestedBy == "local: ivy")
        #expect(DesiredState(legacy: document.legacy).isolation.origin == .local)
        #expect(DesiredState(legacy: document.legacy).isolation.requestedBy == "ivy")
        // A report's answer from a server before 0.3.0 carries `desired` only.
        let old = #"{"log_acked_through":4,"desired":{"generation":2,"state":"isolated","intent_id":null,"reason":"r","requested_by":"local: ivy"}}"#
        let answer = try Wire.decode(ReportResponse.self, from: Data(old.utf8))
        #expect(answer.state.generation == 2 && answer.state.isolation.origin == .local && answer.refusedFlows.isEmpty)
    }
}
