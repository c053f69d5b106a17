import Dispatch

/// A serial executor backed by its own dispatch queue, so an actor that uses it runs its
/// (blocking) libpq calls on a dispatch thread and never on Swift concurrency's cooperative pool.
/// `@unchecked Sendable`: it holds only its `DispatchQueue` (thread-safe), and never changes.
final class QueueExecutor: SerialExecutor, @unchecked Sendable {
    let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
