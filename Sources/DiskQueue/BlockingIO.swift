import Dispatch

/// Runs blocking file work on a serial dispatch queue of its own and resumes the async caller
/// when it is done, as NIOFileSystem does with its thread pool: the Swift cooperative pool (as
/// many threads as cores, two here) is never parked on a `pread`, a `fdatasync` or a lock held
/// across one, so the HTTP handlers that share it keep answering.
public final class BlockingIO: Sendable {
    private let queue: DispatchQueue

    public init(label: String) {
        queue = DispatchQueue(label: label, qos: .userInitiated)
    }

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}
