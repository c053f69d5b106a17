import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// The extractor process: the cycle loop, and — when given an address — `/healthz` and
/// `/metrics` (source and IDB lags, states, cycles) over HTTP. SIGTERM ends it between cycles;
/// a SIGKILL mid-cycle rolls the cycle's transaction back.
public struct ExtractorServer: Sendable {
    public let extractor: Extractor
    public let listen: (host: String, port: Int)?
    let logger: Logger

    public init(extractor: Extractor, listen: (host: String, port: Int)?, logger: Logger) {
        self.extractor = extractor
        self.listen = listen
        self.logger = logger
    }

    struct Loop: Service {
        let extractor: Extractor
        func run() async throws {
            try await cancelWhenGracefulShutdown { try await extractor.run() }
            await extractor.close()
        }
    }

    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: Loop(extractor: extractor))]
        if let listen {
            let router = Router()
            let metrics = extractor.metrics
            router.get("/healthz") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
            }
            router.get("/metrics") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                    body: .init(byteBuffer: ByteBuffer(bytes: metrics.emit())))
            }
            let app = Application(
                router: router,
                configuration: .init(
                    address: .hostname(listen.host, port: listen.port), serverName: "bcpipe-extractor"),
                onServerRunning: { _ in onReady() }, logger: logger)
            services.append(.init(service: app))
        } else {
            onReady()
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
