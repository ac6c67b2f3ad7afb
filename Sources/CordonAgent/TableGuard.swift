#if canImport(Glibc)
import Glibc
#endif
import CordonCore
import CordonNftables
import CordonWire
import Foundation
import Logging
import Synchronization

/// Notices when anything but this agent removes or changes Cordon's tables (`nft flush ruleset`,
/// another firewall manager's reload) and puts them back.
///
/// Two triggers: nf_tables notifications (each transaction ends with a new-generation message
/// naming the committing process; another process's wakes the check at once) and a periodic
/// check (every 30 s) for what notifications cannot show (a lost notification, an overrun). The
/// check compares each table's fingerprint in the kernel with the one recorded when the agent
/// installed it (verified against the ruleset generation, see `NftablesBackend.installedChange`).
/// A restore counts only once its result is verified: one that another transaction overtook
/// again is a failure, so a sustained attack ends in "degraded", never in a quiet loss. Three
/// failed restores in a row mark the agent degraded.
final class TableGuard: Sendable {
    static let interval: Double = 30
    static let escalateAfter = 3

    private let backend: NftablesBackend
    private let installed: InstalledTables
    /// Re-installs what the agent's state says should be in the kernel.
    private let restore: @Sendable (String) throws -> Void
    /// action, reason, outcome → the decision log.
    private let record: @Sendable (String, String, String) -> Void
    private let logger: Logger
    private let wake = DispatchSemaphore(value: 0)
    private let failures = Atomic<Int>(0)
    let restores = Atomic<UInt64>(0)
    let escalations = Atomic<UInt64>(0)
    let degraded = Atomic<Bool>(false)
    /// The times of the latest successful restores (Unix seconds), newest last.
    private let restoreTimes = Mutex<[Int64]>([])

    /// The last restore's time and how many came within `GuardHint.window` of `now`.
    func restoreHistory(now: Int64 = TimeText.now()) -> (last: Int64?, recent: Int) {
        restoreTimes.withLock { times in (times.last, times.filter { now - $0 < GuardHint.window }.count) }
    }

    init(backend: NftablesBackend, installed: InstalledTables, restore: @escaping @Sendable (String) throws -> Void,
         record: @escaping @Sendable (String, String, String) -> Void, logger: Logger) {
        self.backend = backend
        self.installed = installed
        self.restore = restore
        self.record = record
        self.logger = logger
    }

    func start() {
        installed.onUnverified { [wake] in wake.signal() }
        let ownPid = UInt32(getpid())
        do {
            let events = try RulesetEvents()
            Thread.detachNewThread { [self] in
                while true {
                    let committers = events.next(timeout: 3600)
                    if committers.contains(where: { $0 != ownPid }) { wake.signal() }
                }
            }
        } catch {
            logger.warning("guard: no nf_tables notifications (\(error)); checking every \(Int(Self.interval)) s only")
        }
        Thread.detachNewThread { [self] in
            while true {
                let notified = wake.wait(timeout: .now() + Self.interval) == .success
                // Let a burst of foreign transactions (a reload) finish before looking.
                if notified { usleep(100_000); while wake.wait(timeout: .now()) == .success {} }
                check(trigger: notified ? "another program changed nf_tables" : "periodic check")
            }
        }
    }

    /// Compares the kernel with what the agent installed; restores on any difference.
    func check(trigger: String) {
        guard let token = installed.quiet else {
            // A change of the agent's own is running: look again shortly, not in 30 s.
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { [self] in wake.signal() }
            return
        }
        var changed: [String] = []
        for (name, expected) in installed.snapshot {
            let current = try? backend.fingerprint(of: name)
            switch expected {
            case .absent:
                if current != nil { changed.append("table inet \(name) present") }
            case .present(let fingerprint):
                if current != fingerprint { changed.append(current == nil ? "table inet \(name) removed" : "table inet \(name) changed") }
            case .unverified:
                changed.append("table inet \(name) changed before the agent could verify its install")
            }
        }
        // A change of the agent's own during the check makes the comparison meaningless.
        guard installed.unchanged(since: token) else {
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { [self] in wake.signal() }
            return
        }
        guard !changed.isEmpty else { return }
        let reason = "\(trigger): " + changed.joined(separator: ", ")
        do {
            try restore(reason)
            let overtaken = installed.snapshot.filter { $0.value == .unverified }.keys.sorted()
            if !overtaken.isEmpty {
                throw AgentError.invalidState("another program changed nf_tables again before the restore of "
                                              + overtaken.map { "table inet \($0)" }.joined(separator: ", ") + " could be verified")
            }
            restores.add(1, ordering: .relaxed)
            restoreTimes.withLock { times in
                times.append(TimeText.now())
                if times.count > 100 { times.removeFirst(times.count - 100) }
            }
            failures.store(0, ordering: .relaxed)
            logger.warning("guard: \(reason); restored")
        } catch {
            let count = failures.add(1, ordering: .relaxed).newValue
            // A refused restore is in the log already (the runner wrote it); one overtaken after it was not.
            if error is AgentError { record("restore", reason, "failed (\(count) in a row): \(error)") }
            logger.critical("guard: \(reason); RESTORE FAILED (\(count) in a row): \(error)")
            if count >= Self.escalateAfter && !degraded.exchange(true, ordering: .relaxed) {
                escalations.add(1, ordering: .relaxed)
                record("escalate", "\(count) restores failed in a row", "degraded: Cordon's tables are not what the agent installed")
            }
            // Try again soon rather than at the next period.
            DispatchQueue.global().asyncAfter(deadline: .now() + 1) { [self] in wake.signal() }
        }
        if degraded.load(ordering: .relaxed), failures.load(ordering: .relaxed) == 0 {
            degraded.store(false, ordering: .relaxed)
            logger.notice("guard: recovered from degraded")
        }
    }
}
