import CordonServer
import CordonWire
import Foundation
import Testing

/// The rollout's decisions, with no database or clock.
@Suite struct RolloutPlannerTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let a = UUID(), b = UUID(), c = UUID()

    static func rollout(soak: Int64 = 60, maxFailures: Int = 0) -> Rollout {
        let waves = WaveSizes.assign(["1", "100%"], count: 3)
        let hosts = zip([a, b, c], ["web-1", "web-2", "web-3"]).enumerated().map { index, host in
            Rollout.Host(id: host.0, hostname: host.1, wave: waves[index], changedAt: t0)
        }
        return Rollout(id: UUID(), selector: #"role == "web""#, mode: .enforce, waves: ["1", "100%"], soakSeconds: soak, confirmWindowSeconds: 120,
                       maxFailures: maxFailures, state: .running, currentWave: 0, waveStartedAt: nil, soakUntil: nil, failures: 0, haltReason: nil,
                       createdBy: "apollo", createdAt: t0, updatedAt: t0, hosts: hosts)
    }

    static let online = RolloutObservation(connected: true)

    /// Steps `r` once with the commands' generations filled in, as the driver would.
    static func run(_ r: Rollout, _ seen: [UUID: RolloutObservation], at seconds: Double) -> RolloutPlanner.Step {
        var step = RolloutPlanner.step(r, observations: seen, now: t0.addingTimeInterval(seconds))
        for command in step.commands {
            if case .apply(let id) = command, let i = step.rollout.hosts.firstIndex(where: { $0.id == id }) {
                step.rollout.hosts[i].generation = 7
                step.rollout.hosts[i].previous = Rollout.Previous(mode: nil, policy: nil)
            }
        }
        return step
    }

    @Test("wave sizes: counts and shares, cumulative, never an empty wave; the last must be 100%")
    func waveSizes() throws {
        #expect(WaveSizes.assign(["1", "10%", "100%"], count: 20) == [0, 1] + Array(repeating: 2, count: 18))
        #expect(WaveSizes.assign(["1", "10%", "100%"], count: 3) == [0, 1, 1], "10% of 3 rounds up to 1 host: that wave adds none and is dropped")
        #expect(WaveSizes.assign(["1", "1%", "10%", "100%"], count: 1000).filter { $0 == 1 }.count == 9)
        #expect(WaveSizes.assign(["100%"], count: 2) == [0, 0])
        #expect(throws: WaveSizes.Invalid.self) { try WaveSizes.check(["1", "50%"]) }
        #expect(throws: WaveSizes.Invalid.self) { try WaveSizes.check(["0", "100%"]) }
        #expect(throws: WaveSizes.Invalid.self) { try WaveSizes.check(["ten", "100%"]) }
        #expect(throws: WaveSizes.Invalid.self) { try WaveSizes.check(["101%"]) }
        try WaveSizes.check(["1", "10%", "100%"])
    }

    @Test("a wave's hosts are stepped, confirm, soak; only then does the next wave start, and the last one ends it")
    func wavesProceed() {
        var r = Self.rollout()
        var step = Self.run(r, [Self.a: Self.online], at: 0)
        #expect(step.commands == [.apply(Self.a)], "only the first wave's one host")
        #expect(step.rollout.hosts.map(\.state) == [.applying, .waiting, .waiting])
        r = step.rollout
        // Not confirmed yet: nothing moves.
        step = Self.run(r, [Self.a: Self.online], at: 10)
        #expect(step.commands.isEmpty && step.rollout.hosts[0].state == .applying)
        var confirmed = Self.online
        confirmed.result = AppliedGeneration(generation: 7, ok: true, error: nil)
        step = Self.run(step.rollout, [Self.a: confirmed], at: 20)
        #expect(step.rollout.hosts[0].state == .confirmed)
        #expect(step.rollout.soakUntil == Self.t0.addingTimeInterval(80), "the soak runs from the wave's last confirmation")
        #expect(step.rollout.currentWave == 0)
        step = Self.run(step.rollout, [Self.a: confirmed], at: 79)
        #expect(step.rollout.currentWave == 0)
        step = Self.run(step.rollout, [Self.a: confirmed], at: 80)
        #expect(step.rollout.currentWave == 1 && step.commands.isEmpty)
        step = Self.run(step.rollout, [Self.b: Self.online, Self.c: RolloutObservation(connected: true, inSync: true)], at: 81)
        #expect(step.commands == [.apply(Self.b)], "a host already in sync is skipped")
        #expect(step.rollout.hosts.map(\.state) == [.confirmed, .applying, .skipped])
        step = Self.run(step.rollout, [Self.b: confirmed, Self.c: Self.online], at: 90)
        step = Self.run(step.rollout, [Self.b: confirmed, Self.c: Self.online], at: 150)
        #expect(step.rollout.state == .succeeded && step.rollout.soakUntil == nil)
    }

    @Test("a halt without revert (a restore) leaves every host as it is")
    func haltWithoutRevert() throws {
        var confirmed = Self.online
        confirmed.result = AppliedGeneration(generation: 7, ok: true, error: nil)
        let started = Self.run(Self.run(Self.rollout(), [Self.a: Self.online], at: 0).rollout, [Self.a: confirmed], at: 1).rollout
        #expect(started.hosts[0].state == .confirmed)
        let kept = try #require(RolloutPlanner.halt(started, reason: "restored", now: Self.t0, revert: false))
        #expect(kept.commands.isEmpty && kept.rollout.state == .halted && kept.rollout.hosts.map(\.state) == [.confirmed, .waiting, .waiting])
        let reverted = try #require(RolloutPlanner.halt(started, reason: "analyst", now: Self.t0))
        #expect(reverted.commands.count == 1 && reverted.rollout.hosts[0].state == .reverted, "an analyst's halt still reverts")
    }

    @Test("a rollback halts at once: the wave's hosts go back, the hosts not reached are untouched, the reason names the host")
    func rollbackHalts() {
        var r = Self.run(Self.rollout(), [Self.a: Self.online], at: 0).rollout
        var rolled = Self.online
        rolled.result = AppliedGeneration(generation: 7, ok: false, error: "management channel check failed: no answer", rolledBack: true)
        let step = Self.run(r, [Self.a: rolled], at: 5)
        r = step.rollout
        #expect(r.state == .halted)
        #expect(r.haltReason == "host web-1 rolled back: management channel check failed: no answer")
        #expect(step.commands == [.revert(Self.a, Rollout.Previous(mode: nil, policy: nil))])
        #expect(r.hosts.map(\.state) == [.reverted, .waiting, .waiting])
        #expect(r.hosts[0].detail?.contains("rolled back") == true)
        #expect(Self.run(r, [Self.a: rolled], at: 6).commands.isEmpty, "a halted rollout does nothing by itself")
    }

    @Test("a host that does not report within its confirm window halts the rollout; before the window and its grace it does not")
    func silenceHalts() {
        let r = Self.run(Self.rollout(), [Self.a: Self.online], at: 0).rollout
        #expect(Self.run(r, [Self.a: Self.online], at: 120 + RolloutPlanner.reportGrace).rollout.state == .running)
        let late = Self.run(r, [Self.a: Self.online], at: 121 + RolloutPlanner.reportGrace)
        #expect(late.rollout.state == .halted)
        #expect(late.rollout.haltReason == "host web-1 did not report within its confirm window (120 s)")
        #expect(late.commands.count == 1)
    }

    @Test("a regression on a host of the wave halts it, during the wave and during its soak")
    func regressionHalts() {
        var r = Self.run(Self.rollout(), [Self.a: Self.online], at: 0).rollout
        var confirmed = Self.online
        confirmed.result = AppliedGeneration(generation: 7, ok: true, error: nil)
        r = Self.run(r, [Self.a: confirmed], at: 5).rollout
        #expect(r.soakUntil != nil && r.hosts[0].state == .confirmed)
        var regressed = confirmed
        regressed.regression = "rejected outbound tcp to 198.51.100.7:8080"
        let step = Self.run(r, [Self.a: regressed], at: 30)
        #expect(step.rollout.state == .halted)
        #expect(step.rollout.haltReason == "host web-1: regression: rejected outbound tcp to 198.51.100.7:8080")
        #expect(step.commands == [.revert(Self.a, Rollout.Previous(mode: nil, policy: nil))])
    }

    @Test("failures: none in the first wave; across the later waves up to max_failures, counted in all")
    func failures() {
        let first = Self.run(Self.rollout(maxFailures: 5), [Self.a: RolloutObservation(connected: false)], at: 0)
        #expect(first.rollout.state == .halted && first.rollout.haltReason?.contains("web-1 (offline when its wave started)") == true)
        var r = Self.rollout(soak: 0, maxFailures: 1)
        var confirmed = Self.online
        confirmed.result = AppliedGeneration(generation: 7, ok: true, error: nil)
        r = Self.run(r, [Self.a: Self.online], at: 0).rollout
        r = Self.run(r, [Self.a: confirmed], at: 1).rollout
        #expect(r.currentWave == 1)
        var refused = Self.online
        refused.result = AppliedGeneration(generation: 7, ok: false, error: "the server's policy does not read", rolledBack: false)
        r = Self.run(r, [Self.b: Self.online, Self.c: RolloutObservation(connected: false)], at: 2).rollout
        #expect(r.state == .running && r.failures == 1, "one offline host is within max_failures 1")
        let step = Self.run(r, [Self.b: refused, Self.c: RolloutObservation(connected: false)], at: 3)
        #expect(step.rollout.state == .halted && step.rollout.failures == 2)
        #expect(step.rollout.hosts[0].state == .confirmed, "a finished wave stays as it is")
    }

    @Test("halt by hand reverts the running wave; resume restarts it with its hosts waiting; abort ends it")
    func controls() throws {
        let r = Self.run(Self.rollout(), [Self.a: Self.online], at: 0).rollout
        let halted = try #require(RolloutPlanner.halt(r, reason: "halt by apollo", now: Self.t0))
        #expect(halted.rollout.state == .halted && halted.commands.count == 1 && halted.rollout.haltReason == "halt by apollo")
        #expect(RolloutPlanner.halt(halted.rollout, reason: "again", now: Self.t0) == nil)
        let resumed = try #require(RolloutPlanner.resume(halted.rollout, now: Self.t0))
        #expect(resumed.state == .running && resumed.hosts[0].state == .waiting && resumed.hosts[0].generation == nil && resumed.failures == 0)
        #expect(RolloutPlanner.resume(resumed, now: Self.t0) == nil)
        let aborted = try #require(RolloutPlanner.abort(halted.rollout, reason: "abort by apollo", now: Self.t0))
        #expect(aborted.rollout.state == .aborted && aborted.commands.isEmpty, "a halted wave was put back already")
        #expect(aborted.rollout.haltReason == "halt by apollo")
        #expect(RolloutPlanner.abort(aborted.rollout, reason: "again", now: Self.t0) == nil)
    }
}
