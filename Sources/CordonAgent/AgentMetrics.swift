import CordonCore
import CordonTelemetry
import Prometheus

/// The agent's Prometheus metrics. The counters already live where they are counted (the
/// recorder, the guard, the name book: what `cordon status` shows); the endpoint mirrors them at
/// each scrape, so the event path pays nothing for metrics. Durations are recorded where they
/// happen. Every name and its meaning is in Docs/operations.md.
public final class AgentMetrics: Sendable {
    private let events, lostEvents, resyncs, recovered, ignored, flushErrors: MirroredCounter
    private let rejectedInbound, rejectedOutbound, lostLogMessages: MirroredCounter
    private let guardRestores, guardEscalations: MirroredCounter
    private let nameResponses, nameAnswers, nameMalformed, nameHolds, nameHoldCeiling, nameUpdates, nameFailedUpdates: MirroredCounter
    private let aggregates, names, isolated, degraded, confirmDeadline, enforcing, rulesetVersion, fleetConnected: Gauge
    private let flushes: DurationHistogram
    private let appliesOK, appliesFailed: Counter
    private let applies: DurationHistogram

    static let flushBuckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(20), .milliseconds(100), .milliseconds(500),
                                           .seconds(2), .seconds(10)]
    static let applyBuckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(20), .milliseconds(100), .milliseconds(500),
                                           .seconds(2), .seconds(10)]

    public init(registry: PrometheusCollectorRegistry = Telemetry.registry) {
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> MirroredCounter {
            MirroredCounter(registry, name, labels: labels, help: help)
        }
        events = counter("cordon_conntrack_events_total", "Conntrack events and dump entries read.")
        lostEvents = counter("cordon_conntrack_lost_events_total", "Times the kernel dropped conntrack events (ENOBUFS); each starts a re-sync.")
        resyncs = counter("cordon_conntrack_resyncs_total", "Re-reads of the conntrack table after lost events.")
        recovered = counter("cordon_conntrack_recovered_connections_total", "Open connections a re-sync found that no event had reported.")
        ignored = counter("cordon_conntrack_ignored_events_total", "Events not about this host's traffic (loopback, forwarded).")
        flushErrors = counter("cordon_flush_errors_total", "Flushes to the database that failed (retried at the next flush).")
        rejectedInbound = counter("cordon_rejected_packets_total", "Packets the enforcement or isolation rules refused, by direction.",
                                  [("direction", "inbound")])
        rejectedOutbound = counter("cordon_rejected_packets_total", "Packets the enforcement or isolation rules refused, by direction.",
                                   [("direction", "outbound")])
        lostLogMessages = counter("cordon_rejected_log_lost_total", "Times the kernel dropped log messages of refused packets (ENOBUFS).")
        guardRestores = counter("cordon_guard_restores_total", "Times the guard found Cordon's tables changed by someone else and put them back.")
        guardEscalations = counter("cordon_guard_escalations_total", "Times the guard gave up restoring in place and reinstalled from the record.")
        nameResponses = counter("cordon_dns_responses_total", "DNS responses read from the configured resolvers.")
        nameAnswers = counter("cordon_dns_names_learned_total", "Address-name answers learned from DNS responses.")
        nameMalformed = counter("cordon_dns_malformed_total", "DNS responses that did not parse.")
        nameHolds = counter("cordon_dns_held_packets_total", "DNS answers held until the addresses they carry were allowed.")
        nameHoldCeiling = counter("cordon_dns_hold_ceiling_total", "Holds let go at the 250 ms ceiling before the kernel acknowledged.")
        nameUpdates = counter("cordon_dns_element_updates_total", "Element transactions adding learned addresses to name sets.")
        nameFailedUpdates = counter("cordon_dns_element_update_failures_total", "Element transactions the kernel refused.")
        aggregates = registry.makeGauge(name: "cordon_flow_aggregates", help: "Flow aggregates the agent holds.")
        names = registry.makeGauge(name: "cordon_dns_names", help: "Names in the agent's name table.")
        isolated = registry.makeGauge(name: "cordon_isolated", help: "1 while the host is isolated.")
        degraded = registry.makeGauge(name: "cordon_guard_degraded", help: "1 while the guard cannot verify or restore the tables.")
        enforcing = registry.makeGauge(name: "cordon_enforcing", help: "1 while a ruleset is enforced (default-reject), 0 in discovery.")
        rulesetVersion = registry.makeGauge(name: "cordon_ruleset_version", help: "The ruleset version in force (0 in discovery).")
        confirmDeadline = registry.makeGauge(name: "cordon_confirm_deadline_timestamp_seconds",
                                             help: "When an unconfirmed enforcement rolls back (Unix time); 0 when none is pending.")
        fleetConnected = registry.makeGauge(name: "cordon_fleet_connected", help: "1 when the last call to the fleet server succeeded (absent without a server).")
        flushes = registry.makeDurationHistogram(name: "cordon_flush_duration_seconds", buckets: Self.flushBuckets,
                                                 help: "Time to write the changed aggregates and names to the database.")
        applies = registry.makeDurationHistogram(name: "cordon_apply_duration_seconds", buckets: Self.applyBuckets,
                                                 help: "Time of one nftables transaction that changes the firewall.")
        appliesOK = registry.makeCounter(name: "cordon_applies_total", labels: [("outcome", "ok")],
                                         help: "nftables transactions that change the firewall, by outcome.")
        appliesFailed = registry.makeCounter(name: "cordon_applies_total", labels: [("outcome", "failed")],
                                             help: "nftables transactions that change the firewall, by outcome.")
    }

    public func flushed(in duration: Duration) { flushes.record(duration) }

    public func applied(in duration: Duration, ok: Bool) {
        applies.record(duration)
        (ok ? appliesOK : appliesFailed).increment()
    }

    /// Brings the mirrored metrics to the status the agent would answer now.
    public func update(_ report: StatusReport, state: HostState) {
        events.follow(report.events)
        lostEvents.follow(report.lostEvents)
        resyncs.follow(report.resyncs)
        recovered.follow(report.recoveredConnections)
        ignored.follow(report.ignoredEvents)
        flushErrors.follow(report.flushErrors)
        rejectedInbound.follow(report.rejectedInbound)
        rejectedOutbound.follow(report.rejectedOutbound)
        lostLogMessages.follow(report.lostLogMessages)
        guardRestores.follow(report.guardRestores)
        guardEscalations.follow(report.guardEscalations)
        if let counters = report.names {
            nameResponses.follow(counters.responses)
            nameAnswers.follow(counters.answers)
            nameMalformed.follow(counters.malformed)
            names.set(Double(counters.names))
            if let hold = counters.hold {
                nameHolds.follow(hold.held)
                nameHoldCeiling.follow(hold.ceilingReached)
                nameUpdates.follow(hold.updates)
                nameFailedUpdates.follow(hold.failedUpdates)
            }
        }
        aggregates.set(Double(report.flows))
        isolated.set(state.required.overlay ? 1.0 : 0.0)
        degraded.set(report.degraded ? 1.0 : 0.0)
        let enforcement = state.enforcement
        enforcing.set(enforcement.mode == .enforce ? 1.0 : 0.0)
        rulesetVersion.set(Double(enforcement.mode == .enforce ? enforcement.version ?? 0 : 0))
        confirmDeadline.set(Double(enforcement.unconfirmed ? enforcement.confirmDeadline ?? 0 : 0))
        if let fleet = report.fleet { fleetConnected.set(fleet.connected ? 1.0 : 0.0) }
    }
}
