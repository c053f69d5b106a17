import Control
import DiskQueue
import EventModel
import EventRows
import Foundation
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// One collector process: the HTTP API of CONTRACT 2 and the shipper, in one service group
/// that shuts down gracefully on SIGTERM (stop accepting, finish in-flight appends, close the
/// queue). Every `200` was fsync'd first, so SIGKILL loses nothing acknowledged either.
public struct CollectorServer: Sendable {
    public let settings: CollectorSettings
    let logger: Logger

    public init(settings: CollectorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Runs until SIGTERM or SIGINT. `onReady` is called once the listener is bound.
    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        let queue = try DiskQueue(settings.queue, logger: logger)
        let registry = PrometheusCollectorRegistry()
        let state = CollectorState(registry: registry, collector: settings.name)
        state.metrics.queueMaxBytes.set(Double(settings.queue.maxBytes))
        // The seqs accepted before a restart: the last durable frame's last event.
        if let last = queue.lastRecords?.last, let summary = try? QueueRecord.summary(of: last) {
            state.restored(through: summary.seq)
        }
        let ingest = Ingest(settings: settings, queue: queue, state: state)
        let shipper = Shipper(settings: settings, queue: queue, state: state, logger: logger)
        let router = Self.router(settings: settings, ingest: ingest, queue: queue, state: state, registry: registry)
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(settings.listen.host, port: settings.listen.port), serverName: "bcpipe-collector"),
            onServerRunning: { _ in onReady() },
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app), .init(service: shipper)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await queue.shutdown()
            throw error
        }
        await queue.shutdown()
        logger.info("collector stopped; the disk queue is closed", metadata: ["collector": "\(settings.name)"])
    }

    static func router(
        settings: CollectorSettings, ingest: Ingest, queue: DiskQueue, state: CollectorState,
        registry: PrometheusCollectorRegistry
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/v1/events") { request, _ -> Response in
            // Bounded work in hand: past the cap a request is refused before its body is read.
            guard state.admitRequest(limit: settings.maxConcurrentRequests) else {
                state.metrics.overload.increment()
                return Self.response(
                    Ingest.error(
                        503,
                        "too many requests in flight (\(settings.maxConcurrentRequests)); nothing from this one was accepted, try again",
                        retryAfter: 1))
            }
            defer { state.requestDone() }
            if let refusal = ingest.preflight(
                authorization: request.headers[.authorization], contentType: request.headers[.contentType],
                contentEncoding: request.headers[.contentEncoding])
            {
                return Self.response(refusal)
            }
            let body: ByteBuffer
            do {
                // A compressed body is bounded by the decoded limit too.
                body = try await request.body.collect(upTo: settings.maxRequestBytes)
            } catch {
                return Self.response(
                    Ingest.error(
                        413, "the body is larger than \(settings.maxRequestBytes) bytes; send smaller requests"))
            }
            let answer = await ingest.handle(
                body: Array(buffer: body), contentEncoding: request.headers[.contentEncoding])
            return Self.response(answer)
        }
        router.get("/healthz") { _, _ in Self.json(200, #"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ -> Response in
            // Ready means an ingest request would be taken now: room for a frame of at least one
            // largest line (64 KiB), no earlier write failure, not closing.
            guard let refusal = queue.refusal(forFrameOf: 64 << 10) else { return Self.json(200, #"{"ready":true}"#) }
            return Self.json(
                503, Ingest.json(["ready": false, "error": "the disk queue cannot take events: \(refusal.message)"]))
        }
        router.get("/metrics") { _, _ -> Response in
            Shipper(settings: settings, queue: queue, state: state, logger: Logger(label: "metrics"))
                .updateQueueMetrics()
            var out: [UInt8] = []
            registry.emit(into: &out)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: out)))
        }
        router.get("/v1/status") { _, _ -> Response in
            let body = (try? JSONEncoder.sortedKeys.encode(Self.report(settings: settings, queue: queue, state: state)))
            return Self.json(200, body.map { String(decoding: $0, as: UTF8.self) } ?? "{}")
        }
        return router
    }

    /// What `GET /v1/status` serves.
    static func report(settings: CollectorSettings, queue: DiskQueue, state: CollectorState) -> CollectorReport {
        let s = queue.stats
        let snap = state.snapshot
        func iso(_ ms: Int64?) -> String? {
            ms.map {
                ISO8601DateFormatter.withMilliseconds.string(from: Date(timeIntervalSince1970: Double($0) / 1000))
            }
        }
        return CollectorReport(
            name: settings.name, source: settings.source,
            idb: .init(site: settings.idbSite, database: settings.idbDatabase, reachable: snap.linkUp),
            mode: DeliveryMode.of(linkUp: snap.linkUp, backlog: s.events, threshold: UInt64(settings.shipBatchEvents)),
            queue: .init(
                events: s.events, bytes: s.bytes, oldestEventTs: iso(s.oldestEventTimestamp), segments: s.segments,
                lostEvents: s.lostEvents, writable: s.writable),
            shipped: .init(seq: snap.shippedSeq, ts: iso(snap.shippedTs)))
    }

    static func response(_ a: IngestAnswer) -> Response {
        var r = json(a.status, a.body)
        if let retry = a.retryAfter { r.headers[.retryAfter] = String(retry) }
        return r
    }

    static func json(_ status: Int, _ body: String) -> Response {
        Response(
            status: .init(code: status), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

extension ISO8601DateFormatter {
    static var withMilliseconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
