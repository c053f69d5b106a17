import Control
import Foundation
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle
import Topology

/// `bcpipe witness run`: a small process at a third location (neither site) that tells a site
/// failure from a network partition (CONTRACT 6.4). `GET /v1/reach/SITE` probes that site's
/// coordinator and PostgreSQL server from here, fresh for every request, and answers
/// `{"site", "coordinator", "postgres", "checked_at"}`; `GET /v1/reach` does every site. It keeps
/// no state and writes nothing: any number of them may run, and one that restarts is at once as
/// good as before. `/healthz` and `/metrics` are open; the rest needs `BCPIPE_COORDINATOR_TOKEN`
/// when one is set.
public struct WitnessServer: Sendable {
    public struct Settings: Sendable {
        public var listen: HostPort
        /// `BCPIPE_COORDINATOR_TOKEN`, or nil for none.
        public var token: String?
        /// Seconds each probe may take (a PostgreSQL connection, an HTTP request).
        public var probeTimeout: Int = 3
        /// Seconds between the background probes that keep `/metrics` current.
        public var metricsInterval: Double = 5

        public init(listen: HostPort, token: String?) {
            self.listen = listen
            self.token = token
        }
    }

    public let topology: Topology
    public let settings: Settings
    let logger: Logger
    let registry = PrometheusCollectorRegistry()

    public init(topology: Topology, settings: Settings, logger: Logger) {
        self.topology = topology
        self.settings = settings
        self.logger = logger
    }

    /// Probes `site` now and records what it found in the metrics.
    func reach(_ site: Topology.Site) async -> SiteReach {
        let p = await Reachability.probe(site, timeout: settings.probeTimeout)
        let reach = SiteReach(
            site: site.name, coordinator: p.coordinator, postgres: p.postgres != nil,
            checkedAt: ISO8601DateFormatter.withFractionalSeconds.string(from: Date()))
        for (target, up) in [("coordinator", reach.coordinator), ("postgres", reach.postgres)] {
            registry.makeGauge(
                name: "bcpipe_witness_reaches", labels: [("site", site.name), ("target", target)],
                help: "1 when the site's coordinator or PostgreSQL server answered the witness's last probe."
            ).set(Double(up ? 1 : 0))
        }
        registry.makeCounter(
            name: "bcpipe_witness_probes_total", labels: [("site", site.name)], help: "Probes of a site."
        ).increment()
        return reach
    }

    /// Every site at once.
    func reachAll() async -> [SiteReach] {
        await withTaskGroup(of: (Int, SiteReach).self) { group in
            for (i, site) in topology.sites.enumerated() { group.addTask { (i, await reach(site)) } }
            var out: [(Int, SiteReach)] = []
            for await r in group { out.append(r) }
            return out.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    struct Prober: Service {
        let witness: WitnessServer
        func run() async throws {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    _ = await witness.reachAll()
                    try await Task.sleep(for: .seconds(witness.settings.metricsInterval))
                }
            }
        }
    }

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ in Self.json(.ok, Data(#"{"status":"ok"}"#.utf8)) }
        router.get("/metrics") { [registry] _, _ in
            var out: [UInt8] = []
            registry.emit(into: &out)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: out)))
        }
        router.add(middleware: TokenCheck(token: settings.token, realm: "bcpipe witness"))
        router.get("/v1/reach") { _, _ in
            Self.json(.ok, (try? JSONEncoder.sortedKeys.encode(await reachAll())) ?? Data("[]".utf8))
        }
        router.get("/v1/reach/:site") { _, context in
            let name = context.parameters.get("site") ?? ""
            guard let site = topology.site(named: name) else {
                let known = topology.sites.map(\.name).joined(separator: ", ")
                let body = try JSONSerialization.data(withJSONObject: [
                    "error": "this witness knows no site \"\(name)\"; its topology's sites are \(known)"
                ])
                return Self.json(.notFound, body)
            }
            return Self.json(.ok, (try? JSONEncoder.sortedKeys.encode(await reach(site))) ?? Data("{}".utf8))
        }
        return router
    }

    static func json(_ status: HTTPResponse.Status, _ body: Data) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: Array(body))))
    }

    /// Serves until SIGTERM or SIGINT.
    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        let app = Application(
            router: router(),
            configuration: .init(
                address: .hostname(settings.listen.host, port: settings.listen.port), serverName: "bcpipe-witness"),
            onServerRunning: { _ in onReady() }, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app), .init(service: Prober(witness: self))],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
