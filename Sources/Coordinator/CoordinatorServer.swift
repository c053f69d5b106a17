import Control
import Foundation
import Hummingbird
import Logging
import PostgresClient
import ServiceLifecycle
import Synchronization
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// What a coordinator reports at `GET /v1/status`.
public struct CoordinatorStatus: Codable, Sendable {
    public struct Peer: Codable, Sendable {
        public var site: String
        public var reachable: Bool
        public var epoch: Int64?
        public var phase: Phase?
        public var error: String?
    }

    public var site: String
    public var martReachable: Bool
    public var error: String?
    public var control: ControlState?
    public var peers: [Peer] = []
    /// As the active mart's server reports its subscribers (active-standby).
    public var replication: [Replication.SubscriberLag] = []
    /// Whether this (standby) mart subscribes to the active one.
    public var subscribed: Bool?
    /// Purge holds set and not released, as this site's mart holds them.
    public var purgeHolds: Int?
    public var checkedAt: String
}

/// A site's coordinator: watches its own mart and its peers, holds the site's view of phase,
/// epoch, mode and role in the mart's `control` schema, serves it over HTTP, and fences its own
/// site when a peer declared it failed at a later epoch (an old epoch must not write).
public final class CoordinatorServer: Sendable {
    public let topology: Topology
    public let site: Topology.Site
    let logger: Logger
    public let pollInterval: Double
    /// `BCPIPE_COORDINATOR_TOKEN`: when set, everything but `/healthz` needs it (Bearer, or
    /// Basic with it as the password for a browser), and peers are asked with it.
    public let token: String?

    /// What the rounds share with the HTTP handlers: the last status, the own mart's connection
    /// (kept between rounds) and the deployment view served for a second.
    private struct Shared: Sendable {
        var latest: CoordinatorStatus
        var mart: PostgresConnection?
        var deploymentCache: (at: Date, status: DeploymentStatus)?
    }
    private let shared: Mutex<Shared>

    public init(topology: Topology, site: String, token: String?, pollInterval: Double = 1, logger: Logger) throws {
        guard let s = topology.site(named: site) else {
            throw TopologyError(
                path: "--site",
                message: "unknown site \"\(site)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
        }
        self.topology = topology
        self.site = s
        self.logger = logger
        self.token = token
        self.pollInterval = pollInterval
        shared = Mutex(Shared(latest: CoordinatorStatus(site: site, martReachable: false, checkedAt: "")))
    }

    public var status: CoordinatorStatus {
        shared.withLock { $0.latest }
    }

    /// `DeploymentStatus.gather` over this site's topology, reused for a second.
    func deployment() async -> DeploymentStatus {
        if let c = shared.withLock({ $0.deploymentCache }), Date().timeIntervalSince(c.at) < 1 { return c.status }
        let fresh = await DeploymentStatus.gather(topology, token: token)
        shared.withLock { $0.deploymentCache = (Date(), fresh) }
        return fresh
    }

    /// The own mart's connection, opened (and its identity initialized) when there is none.
    func martConnection() async throws -> PostgresConnection {
        if let m = shared.withLock({ $0.mart }) { return m }
        var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
        config.connectTimeout = 3
        config.operationTimeout = 5
        config.statementTimeoutMilliseconds = 5_000
        config.applicationName = "bcpipe coordinator \(site.name)"
        let m = try await PostgresConnection.connect(config, logger: logger)
        do {
            try await ControlStore(m).initialize(topology: topology, site: site.name)
        } catch {
            await m.close()
            throw error
        }
        shared.withLock { $0.mart = m }
        return m
    }

    /// One round: the own mart's state, the peers' status, fencing.
    public func check() async -> CoordinatorStatus {
        var s = CoordinatorStatus(
            site: site.name, martReachable: false, checkedAt: ISO8601DateFormatter().string(from: Date()))
        var mart: PostgresConnection?
        do {
            let m = try await martConnection()
            mart = m
            s.control = try await ControlStore(m).load(journal: 20)
            s.purgeHolds = try await ControlStore(m).purgeHolds().count
            s.martReachable = true
            try await keepReportingRole(m, s.control!)
        } catch {
            s.error = "\(error)"
            if let m = mart { await m.close() }
            mart = nil
            shared.withLock { $0.mart = nil }
        }
        for peer in topology.sites where peer.name != site.name {
            var p = CoordinatorStatus.Peer(site: peer.name, reachable: false)
            var request = URLRequest(url: URL(string: "http://\(peer.coordinator)/v1/status")!)
            request.timeoutInterval = 2
            if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
            do {
                let (data, response) = try await URLSession.shared.fetch(request)
                if response?.statusCode == 401 {
                    throw ControlError(
                        .refused,
                        "\(peer.name)'s coordinator refused this one's token: set the same BCPIPE_COORDINATOR_TOKEN at every site"
                    )
                }
                let other = try JSONDecoder().decode(CoordinatorStatus.self, from: data)
                p.reachable = true
                p.epoch = other.control?.epoch
                p.phase = other.control?.phase
                if let o = other.control, let mine = s.control, let m = mart,
                    let fence = DeploymentMachine.fence(site: site.name, mine: mine, peer: peer.name, theirs: o),
                    // Conditional in the statement itself: return to normal may have re-admitted
                    // this site (a later epoch here) since the state above was read.
                    try await ControlStore(m).fence(reason: fence.reason, epoch: fence.epoch)
                {
                    s.control?.fencedReason = fence.reason
                    logger.error("fenced", metadata: ["reason": "\(fence.reason)"])
                }
            } catch {
                p.error = "\(error.localizedDescription)"
            }
            s.peers.append(p)
        }
        do {
            try await replicate(&s, mart: mart)
        } catch {
            s.error = "replication: \(error)"
        }
        shared.withLock { $0.latest = s }
        return s
    }

    /// Keeps the reporting role read-write in this mart only while it is the reporting mart, so
    /// clients listing every site's server with `target_session_attrs=read-write` land on it.
    /// Compared with the catalog every round, not a remembered value: a migration (or an operator)
    /// may have changed the setting since.
    func keepReportingRole(_ m: PostgresConnection, _ c: ControlState) async throws {
        let readWrite = c.isWritableReporting
        let rows = try await m.query(
            """
            SELECT r.oid IS NOT NULL AND to_regprocedure('control.set_reporting_read_only(boolean)') IS NOT NULL,
                   EXISTS (SELECT 1 FROM pg_db_role_setting d, unnest(d.setconfig) AS s(setting)
                           WHERE d.setrole = r.oid
                             AND d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND s.setting = 'default_transaction_read_only=on')
            FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = 'bcpipe_reporting') AS oid) r
            """)
        // The role and the function come with the mart's migrations; until they ran there is
        // nothing to keep.
        guard rows.first?[0] == "t" else { return }
        let readOnlyNow = rows[0][1] == "t"
        guard readOnlyNow == readWrite else { return }
        try await m.query("SELECT control.set_reporting_read_only($1)", [!readWrite])
        logger.info(
            "reporting role \(readWrite ? "read-write: this is the reporting mart" : "read-only: not the reporting mart")"
        )
    }

    /// Active-standby: the standby's mart subscribes to the active one (set up once, here);
    /// the active reports its subscribers' lag.
    func replicate(_ s: inout CoordinatorStatus, mart: PostgresConnection?) async throws {
        guard let c = s.control, let m = mart, c.mode == .activeStandby else { return }
        if c.role == .active {
            s.replication = try await Replication.lags(m)
            return
        }
        let subscribed = try await Replication.subscriptionExists(m, site: site.name)
        s.subscribed = subscribed
        // Only a standby that is not behind any peer's epoch subscribes by itself; a site coming
        // back after disaster recovery is brought in by rtn start.
        // Nor while a procedure runs here (a switch-over subscribes the old active itself).
        guard !subscribed, c.fencedReason == nil, c.phase == .normal, c.running == nil,
            s.peers.allSatisfy({ ($0.epoch ?? 0) <= c.epoch }),
            let activeName = c.reportingSite,
            activeName != site.name, let active = topology.site(named: activeName)
        else { return }
        var config = PostgresConfiguration(conninfo: active.postgres, database: Topology.martDatabase)
        config.connectTimeout = 3
        config.operationTimeout = 10
        try await PostgresConnection.with(config, logger: logger) { publisher in
            try await Replication.ensurePublication(publisher)
            try await Replication.subscribe(m, site: site.name, publisher: publisher, publisherSite: active.name)
        }
        s.subscribed = true
        logger.notice(
            "standby mart subscribed to the active mart",
            metadata: ["active": "\(activeName)", "standby": "\(site.name)"])
    }

    struct Watcher: Service {
        let server: CoordinatorServer
        func run() async throws {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    _ = await server.check()
                    try await Task.sleep(for: .seconds(server.pollInterval))
                }
            }
        }
    }

    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        _ = await check()
        let router = Router()
        router.get("/healthz") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
        }
        // Open like /healthz, for Prometheus: it holds no more than the status page's numbers.
        router.get("/metrics") { [self] _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: CoordinatorMetrics.emit(status))))
        }
        router.add(middleware: TokenCheck(token: token))
        router.get("/v1/status") { [self] _, _ in
            let body = (try? JSONEncoder.sortedKeys.encode(status)) ?? Data("{}".utf8)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: Array(body))))
        }
        // The whole deployment as this site sees it (`bcpipe status --json`), and the operator's
        // page of it; gathered at most once a second however many browsers poll.
        router.get("/v1/deployment") { [self] _, _ in
            let body = (try? DeploymentStatus.encoder.encode(await deployment())) ?? Data("{}".utf8)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: Array(body))))
        }
        router.get("/") { [self] _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: await deployment().html(viewpoint: site.name))))
        }
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(site.coordinator.host, port: site.coordinator.port),
                serverName: "bcpipe-coordinator"),
            onServerRunning: { _ in onReady() }, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app), .init(service: Watcher(server: self))],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        if let m = shared.withLock({ $0.mart }) { await m.close() }
    }
}

/// Lets `/healthz` through and everything else only with the coordinator token (when one is set).
/// Routes added before it (a witness's `/metrics`) are not behind it.
struct TokenCheck<Context: RequestContext>: RouterMiddleware {
    let token: String?
    var realm = "bcpipe coordinator"
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        guard let token, request.uri.path != "/healthz",
            !AccessToken.authorizes(request.headers[.authorization], token: token)
        else { return try await next(request, context) }
        // A browser (it asks for HTML) is challenged to Basic, so it prompts for the token; API
        // clients to Bearer (swift-corelibs-foundation's URLSession, answered a Basic challenge
        // without credentials, never returns — not even at its timeout).
        let browser = request.headers[.accept]?.contains("text/html") == true
        return Response(
            status: .unauthorized,
            headers: [
                .contentType: "application/json",
                .wwwAuthenticate: browser
                    ? #"Basic realm="\#(realm)""# : #"Bearer realm="\#(realm)""#,
            ],
            body: .init(
                byteBuffer: ByteBuffer(
                    string:
                        #"{"error":"missing or wrong token: send Authorization: Bearer <BCPIPE_COORDINATOR_TOKEN> (a browser: any user, the token as the password)"}"#
                )))
    }
}
