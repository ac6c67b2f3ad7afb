import CordonCore
import CordonStore

/// Isolate and release as actions (`cordon actions`): the request is recorded as pending first,
/// so that a release can supersede it, then carried out by the runner, which settles it. A
/// request that cannot be recorded (a full disk) is carried out all the same, and says so.
public enum Emergency {
    public static func isolate(runner: TransitionRunner, store: FlowStore, operator name: String, reason: String, via: String) -> Answer {
        run(runner, store, "isolate", name, reason) { Engine.Request(.isolate(reason: reason, via: via), operator: name, action: $0) }
    }

    public static func release(runner: TransitionRunner, store: FlowStore, operator name: String, reason: String) -> Answer {
        run(runner, store, "release", name, reason) { Engine.Request(.release(reason: reason), operator: name, action: $0) }
    }

    /// One request of the reconciler's plan: isolations and releases as actions, like the CLI's.
    public static func perform(_ request: Engine.Request, runner: TransitionRunner, store: FlowStore) -> Answer {
        switch request.event {
        case .isolate(let reason, let via): return isolate(runner: runner, store: store, operator: request.operator, reason: reason, via: via)
        case .release(let reason): return release(runner: runner, store: store, operator: request.operator, reason: reason)
        default: return runner.handle(request)
        }
    }

    private static func run(_ runner: TransitionRunner, _ store: FlowStore, _ action: String, _ name: String, _ reason: String,
                            _ request: (String?) -> Engine.Request) -> Answer {
        var id: String?
        var note: String?
        do { id = try store.requestAction(action, operator: name, reason: reason) } catch {
            note = "\(store.path) could not record the request (\(error))"
        }
        // A release must be on record before it loosens anything; an isolation never waits for one.
        if let note, action != "isolate" { return Answer(ok: false, message: "\(note); nothing changed") }
        var answer = runner.handle(request(id))
        // A request refused before anything changed ("a release is being checked already")
        // settles as failed: nothing may stay pending. One the runner settled keeps its status.
        if !answer.ok, let id { try? store.settleAction(id, .failed, detail: answer.message) }
        if let note {
            answer.message += "\nWARNING: \(note); the agent adopts the overlay from the kernel at its next start"
        }
        return answer
    }
}
