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
        #expect(plan == .apply([.request(Engine.Request(.isolate(reason: "alert 42 (intent i-1)", via: "from cordon-server"), operator: "cordon-server: rita"))]))
    }

    @Test("a release of an isolated host is one release; the same state again is in sync")
    func releasesAndKeeps() {
        #expect(FleetReconciler.plan(Self.document(.released, intent: nil), host: Self.isolated)
                == .apply([.request(Engine.Request(.release(reason: "alert 42"), operator: "cordon-server: rita"))]))
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

    static let policy = EffectivePolicy(content: "name: web\n", digest: ContentDigest.hex("name: web\n"), sources: [])
    static func enforce(_ document: DesiredState, window: Int64 = 120, policy: EffectivePolicy? = Self.policy) -> DesiredState {
        var d = document
        d.mode = ModeIntent(mode: .enforce, intentID: "m-1", confirmWithin: window)
        d.policy = policy
        return d
    }

    @Test("enforce with a policy: kept and enforced through the confirm window, named after the intent; in force and confirmed is in sync")
    func enforcesThePolicy() {
        let document = Self.enforce(Self.document(.released))
        #expect(FleetReconciler.plan(document, host: Self.released)
                == .apply([.enforce(Self.policy, confirmWithin: 120, operator: "cordon-server: intent m-1",
                                    reason: "the server's effective policy \(Self.policy.digest.prefix(12)) (intent m-1)")]))
        let enforcing = HostState(enforcement: EnforcementState(mode: .enforce, version: 4, confirmedVersion: 4))
        #expect(FleetReconciler.plan(document, host: enforcing, inForceDigest: Self.policy.digest) == .inSync)
        #expect(FleetReconciler.satisfied(document, host: enforcing, inForceDigest: Self.policy.digest))
        // Another ruleset in force (a local one, or an older policy): the server's goes in.
        guard case .apply(let steps) = FleetReconciler.plan(document, host: enforcing, inForceDigest: String(repeating: "b", count: 64)),
              case .enforce = steps.first else {
            Issue.record("expected an enforce")
            return
        }
        #expect(!FleetReconciler.satisfied(document, host: enforcing, inForceDigest: String(repeating: "b", count: 64)))
    }

    @Test("a mode intent carried out once is not carried out again by a later generation: a local override since stands")
    func modeDoneOnce() {
        let document = Self.enforce(Self.document(.released))
        #expect(FleetReconciler.plan(document, host: Self.released, modeDone: "m-1") == .inSync)
        #expect(FleetReconciler.satisfied(document, host: Self.released, modeDone: "m-1"))
        guard case .apply = FleetReconciler.plan(document, host: Self.released, modeDone: "m-0") else {
            Issue.record("a new mode intent is carried out")
            return
        }
    }

    @Test("in force but unconfirmed (an agent restarted inside its window): the round trip and the confirmation, not another enforce")
    func confirmsAfterARestart() {
        let armed = HostState(enforcement: EnforcementState(mode: .enforce, version: 4, confirmDeadline: 1_800_000_100, confirmWindow: 120,
                                                            confirmedVersion: nil))
        #expect(FleetReconciler.plan(Self.enforce(Self.document(.released)), host: armed, inForceDigest: Self.policy.digest)
                == .apply([.confirm(operator: "cordon-server: intent m-1")]))
    }

    @Test("discovery from the document ends an enforcement; no mode leaves the host's mode alone, whatever policy is assigned")
    func discoveryAndNoMode() {
        var document = Self.document(.released)
        document.mode = ModeIntent(mode: .discovery, intentID: "m-2", confirmWithin: 120)
        let enforcing = HostState(enforcement: EnforcementState(mode: .enforce, version: 4, confirmedVersion: 4))
        #expect(FleetReconciler.plan(document, host: enforcing)
                == .apply([.request(Engine.Request(.discover(reason: "the server's document: discovery (intent m-2)"), operator: "cordon-server: intent m-2"))]))
        #expect(FleetReconciler.plan(document, host: Self.released) == .inSync)
        var assignedOnly = Self.document(.released)
        assignedOnly.policy = Self.policy
        #expect(FleetReconciler.plan(assignedOnly, host: enforcing, inForceDigest: "other") == .inSync)
    }

    @Test("an isolation goes in before the policy, a release after it; the host's own isolation echoed back still lets the policy through")
    func orderWithIsolation() {
        guard case .apply(let steps) = FleetReconciler.plan(Self.enforce(Self.document(.isolated)), host: Self.released), steps.count == 2,
              case .request(let first) = steps[0], case .isolate = first.event, case .enforce = steps[1] else {
            Issue.record("expected isolate, then enforce")
            return
        }
        guard case .apply(let later) = FleetReconciler.plan(Self.enforce(Self.document(.released)), host: Self.isolated), later.count == 2,
              case .enforce = later[0], case .request(let last) = later[1], case .release = last.event else {
            Issue.record("expected enforce, then release")
            return
        }
        guard case .apply(let local) = FleetReconciler.plan(Self.enforce(Self.document(.isolated, origin: .local)), host: Self.released),
              local.count == 1, case .enforce = local[0] else {
            Issue.record("expected the enforce alone")
            return
        }
    }

    @Test("enforce without a policy, or with a confirm window out of range, fails its generation instead of passing for done")
    func refusesWhatItCannotDo() {
        guard case .refuse(let why) = FleetReconciler.plan(Self.enforce(Self.document(.released), policy: nil), host: Self.released) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(why == "the document asks for enforce without a policy")
        guard case .refuse(let window) = FleetReconciler.plan(Self.enforce(Self.document(.released), window: 0), host: Self.released) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(window.contains("confirm_within"))
        #expect(!FleetReconciler.satisfied(Self.enforce(Self.document(.released), policy: nil), host: Self.released))
    }

    @Test("an isolation in a document whose mode part cannot be carried out is applied all the same, and the generation still fails")
    func isolationDespiteABadModePart() {
        let plan = FleetReconciler.plan(Self.enforce(Self.document(.isolated), policy: nil), host: Self.released)
        #expect(plan == .apply([.request(Engine.Request(.isolate(reason: "alert 42 (intent i-1)", via: "from cordon-server"), operator: "cordon-server: rita")),
                                .fail("the document asks for enforce without a policy")]))
        // A release too: the server's release is not held hostage by a broken policy.
        guard case .apply(let steps) = FleetReconciler.plan(Self.enforce(Self.document(.released), window: 0), host: Self.isolated),
              steps.count == 2, case .request(let release) = steps[0], case .release = release.event, case .fail = steps[1] else {
            Issue.record("expected the release, then the failure")
            return
        }
        #expect(!FleetReconciler.satisfied(Self.enforce(Self.document(.isolated), policy: nil), host: Self.isolated))
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
                == .apply([.request(Engine.Request(.isolate(reason: "alert 42 (intent i-1)", via: "from cordon-server"), operator: "cordon-server: rita"))]))
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
