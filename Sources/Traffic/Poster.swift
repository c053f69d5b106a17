import EventModel
import Foundation
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Sends events to collectors over HTTP, as a source would: to both collectors of its HA pair,
/// in seq order, retrying 503 (honouring Retry-After) and connection errors until accepted.
///
/// `@unchecked Sendable`: `totals` is behind `lock`; `URLSession` is thread-safe.
public final class Poster: @unchecked Sendable {
    public struct Totals: Sendable {
        public var accepted = 0
        public var duplicates = 0
        public var rejected = 0
        public var retries = 0
        /// 503 answers (back-pressure: a full queue), each retried.
        public var backPressure = 0
        /// Answers other than 200, 400 and 503 (an error), and attempts nobody answered.
        public var errors = 0
        public var unanswered = 0
        /// Acknowledgement latency of each request, seconds.
        public var latencies: [Double] = []
    }

    let session: URLSession
    let token: String?
    private let lock = NSLock()
    private var totals: [String: Totals] = [:]

    public init(token: String? = ProcessInfo.processInfo.environment["BCPIPE_INGEST_TOKEN"]) {
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 30
        config.httpMaximumConnectionsPerHost = 4
        session = URLSession(configuration: config)
        self.token = token
    }

    /// The totals per collector URL.
    public var results: [String: Totals] {
        lock.lock()
        defer { lock.unlock() }
        return totals
    }

    /// Posts one NDJSON batch to `base` (`http://host:port`) until it is answered 200 (or a
    /// non-retryable status, which is counted as rejected lines and returned).
    @discardableResult
    public func post(_ body: [UInt8], to base: String, patience: Double = 600) async throws -> Int {
        var request = URLRequest(url: URL(string: base + "/v1/events")!)
        request.httpMethod = "POST"
        request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        request.httpBody = Data(body)
        let deadline = Date().addingTimeInterval(patience)
        var delay = 0.1
        while true {
            let started = Date()
            var retryAfter: Double?
            do {
                let (data, response) = try await session.data(for: request)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                if status == 200 || status == 400 {
                    let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
                    record(base) {
                        $0.accepted += json["accepted"] as? Int ?? 0
                        $0.duplicates += json["duplicates"] as? Int ?? 0
                        $0.rejected += (json["rejected"] as? [Any])?.count ?? 0
                        $0.latencies.append(Date().timeIntervalSince(started))
                    }
                    return status
                }
                if status != 503 {
                    record(base) { $0.errors += 1 }
                    throw PosterError("\(base) answered \(status): \(String(decoding: data, as: UTF8.self))")
                }
                record(base) { $0.backPressure += 1 }
                retryAfter = (response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Retry-After").flatMap(
                    Double.init)
            } catch let e as PosterError {
                throw e
            } catch {
                // Unreachable or restarting: try again.
                record(base) { $0.unanswered += 1 }
            }
            record(base) { $0.retries += 1 }
            guard Date() < deadline else {
                throw PosterError("\(base) did not accept a batch within \(Int(patience)) s")
            }
            try await Task.sleep(for: .seconds(retryAfter ?? delay))
            delay = min(2, delay * 2)
        }
    }

    private func record(_ base: String, _ change: (inout Totals) -> Void) {
        lock.lock()
        change(&totals[base, default: Totals()])
        lock.unlock()
    }
}

public struct PosterError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
