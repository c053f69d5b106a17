import DiskQueue
import EventModel
import EventRows
import Foundation
import GzipCompression
import PostgresClient
import Topology
import ZstdCompression

/// The answer to an ingest request, independent of the HTTP library.
public struct IngestAnswer: Sendable, Equatable {
    public var status: Int
    public var body: String
    public var retryAfter: Int?
}

/// `POST /v1/events` (CONTRACT 2): authentication, content checks, decoding, per-line validation,
/// duplicate detection, and the durable append before the answer.
struct Ingest: Sendable {
    let settings: CollectorSettings
    let queue: DiskQueue
    let state: CollectorState
    let parser: EventParser
    /// Makes a request's new events durable: the disk queue's append. A seam for failpoint
    /// tests (an append that fails while a repeat of it waits).
    let append: @Sendable (_ records: [[UInt8]], _ oldestTimestamp: Int64) async throws -> Void

    init(
        settings: CollectorSettings, queue: DiskQueue, state: CollectorState,
        append: (@Sendable ([[UInt8]], Int64) async throws -> Void)? = nil
    ) {
        self.settings = settings
        self.queue = queue
        self.state = state
        self.append = append ?? { records, oldest in _ = try await queue.append(records, oldestTimestamp: oldest) }
        let known = settings.sourceNames
        parser = EventParser(isKnownSource: { known.contains($0) })
    }

    static func json(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func error(_ status: Int, _ message: String, retryAfter: Int? = nil) -> IngestAnswer {
        IngestAnswer(status: status, body: json(["error": message]), retryAfter: retryAfter)
    }

    /// Checks the request's headers before its body is read.
    func preflight(authorization: String?, contentType: String?, contentEncoding: String?) -> IngestAnswer? {
        if let token = settings.token {
            guard AccessToken.authorizes(authorization, token: token) else {
                return Self.error(
                    401, "missing or wrong bearer token: send Authorization: Bearer <BCPIPE_INGEST_TOKEN>")
            }
        }
        let type =
            (contentType ?? "").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            ?? ""
        guard type == "application/x-ndjson" else {
            return Self.error(
                415, "Content-Type must be application/x-ndjson (got \(contentType.map { "\"\($0)\"" } ?? "none"))")
        }
        switch (contentEncoding ?? "identity").lowercased() {
        case "identity", "", "zstd", "gzip": return nil
        default:
            return Self.error(415, "Content-Encoding must be zstd, gzip or none (got \"\(contentEncoding!)\")")
        }
    }

    /// Decodes, validates and durably appends a body whose headers passed ``preflight``.
    func handle(body: [UInt8], contentEncoding: String?) async -> IngestAnswer {
        state.metrics.requests.increment()
        let limit = settings.maxRequestBytes
        var decoded = body
        do {
            switch (contentEncoding ?? "identity").lowercased() {
            case "zstd": decoded = try Zstd.decompress(body, maxOutput: limit)
            case "gzip": decoded = try Gzip.decompress(body, maxOutput: limit)
            default: break
            }
        } catch let e as ZstdError where e.code == .outputTooLarge {
            return Self.error(413, "the decoded body is larger than \(limit) bytes; send smaller requests")
        } catch let e as ZstdError where e.code == .windowTooLarge {
            return Self.error(
                413,
                "the zstd frame asks for a decoding window larger than the body limit (\(limit) bytes) needs; compress with a smaller window (no --long or --ultra)"
            )
        } catch let e as GzipError where e.code == .outputTooLarge {
            return Self.error(413, "the decoded body is larger than \(limit) bytes; send smaller requests")
        } catch {
            return Self.error(415, "the body is not valid \(contentEncoding ?? "") data: \(error)")
        }
        if decoded.count > limit {
            return Self.error(413, "the body is \(decoded.count) bytes, larger than \(limit); send smaller requests")
        }
        var parsed = parser.parse(body: decoded)
        // A collector carries one source (its HA pair's): another topology source is misrouted.
        if parsed.events.contains(where: { $0.source != settings.source }) {
            var kept = ParsedBody()
            kept.rejected = parsed.rejected
            for (event, line) in zip(parsed.events, parsed.lines) {
                if event.source == settings.source {
                    kept.events.append(event)
                    kept.lines.append(line)
                } else {
                    kept.rejected.append(
                        RejectedLine(
                            line: line, field: "source",
                            reason:
                                "collector \(settings.name) takes events of \(settings.source) only (got \"\(event.source)\"); send them to that source's collectors"
                        ))
                }
            }
            kept.rejected.sort { $0.line < $1.line }
            parsed = kept
        }
        let rejected = parsed.rejected.map { ["line": $0.line, "error": $0.error] as [String: Any] }
        state.metrics.rejected.increment(by: Int64(parsed.rejected.count))
        guard !parsed.events.isEmpty else {
            let message = parsed.rejected.isEmpty ? "the body holds no event" : "no line was valid"
            return IngestAnswer(
                status: 400, body: Self.json(["accepted": 0, "duplicates": 0, "rejected": rejected, "error": message]))
        }
        let (ticket, isNew) = await state.reserve(parsed.events.map(\.seq))
        var records: [[UInt8]] = []
        records.reserveCapacity(parsed.events.count)
        var oldest = Int64.max
        // Each event goes into the queue as its IDB row: the shipper never parses it again.
        var row = CopyRow()
        for (event, new) in zip(parsed.events, isNew) where new {
            var record: [UInt8] = []
            record.reserveCapacity(256)
            QueueRecord.append(event, to: &record, row: &row)
            records.append(record)
            oldest = min(oldest, event.ts.millisecondsSinceEpoch)
        }
        let duplicates = parsed.events.count - records.count
        if !records.isEmpty {
            do {
                try await append(records, oldest)
                state.commit(ticket)
            } catch let e as DiskQueueError {
                state.release(ticket)
                state.metrics.backpressure.increment()
                return Self.error(503, "not accepted, try again later: \(e.message)", retryAfter: 1)
            } catch {
                state.release(ticket)
                return Self.error(503, "not accepted, try again later: \(error)", retryAfter: 1)
            }
        } else {
            state.release(ticket)
        }
        state.metrics.accepted.increment(by: Int64(records.count))
        state.metrics.duplicates.increment(by: Int64(duplicates))
        return IngestAnswer(
            status: 200, body: Self.json(["accepted": records.count, "duplicates": duplicates, "rejected": rejected]))
    }
}
