import Foundation
import Logging
import Schema
import Topology

#if canImport(Glibc)
    import Glibc
#endif

/// The local two-site lab: one PostgreSQL server per site, the WAN link simulator, migrated
/// IDBs and marts, and the topology files (`bcpipe.yaml` direct, `SITE.yaml` through the WAN).
///
/// Every operation is idempotent and safe to repeat after an interruption.
public struct LocalLab: Sendable {
    /// Options of `lab up`.
    public struct Options: Sendable {
        public var mode: Topology.Mode = .activeStandby
        public var stuckThreshold: Int = 28_800
        public var lateData: Topology.LateDataPolicy = .discard
        public var basePort: Int = 25_400
        /// Extra environment for the collectors the lab starts (`BCPIPE_INGEST_TOKEN`, queue bounds).
        public var collectorEnvironment: [String: String] = [:]
        /// Start the active extractors (tests that drive an extractor themselves turn this off).
        public var startExtractors = true
        /// Only these sites' extractors (nil: every site's) — a benchmark that times one extractor alone.
        public var extractorSites: Set<String>?
        /// Live traffic in events/s over all sources (0: none), from a generator at each site.
        public var traffic: Double = 0
        /// Run a Prometheus scraping the lab with these alert rules (`deploy/prometheus/alerts.yml`).
        public var prometheusRules: String?
        /// Put the collectors' queues under this directory instead of the lab's (a benchmark
        /// that keeps the queues on a disk of their own); set when the lab is created.
        public var queueRoot: String?
        public init() {}
    }

    public let directory: String
    /// The `bcpipe` executable, for the processes the lab starts (the WAN simulator).
    public let executable: String
    public let logger: Logger

    public init(directory: String, executable: String, logger: Logger) {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.executable = executable
        self.logger = logger
    }

    var wanConfigPath: String { directory + "/wan.json" }
    var wanAckPath: String { directory + "/wan.ack" }
    var wanPIDPath: String { directory + "/wan.pid" }
    var witnessPIDPath: String { directory + "/witness.pid" }
    func siteDirectory(_ name: String) -> String { directory + "/sites/" + name }
    func server(_ state: LabState, _ site: LabState.Site) -> PostgresServer {
        PostgresServer(directory: siteDirectory(site.name), port: state.postgresPort(site))
    }

    /// The direct topology file, for observers outside both sites.
    public var topologyPath: String { directory + "/bcpipe.yaml" }
    /// The topology file of one site's processes and operators.
    public func topologyPath(site: String) -> String { directory + "/\(site).yaml" }

    // MARK: up / down

    /// Starts (or completes) the lab and returns when every part is ready.
    @discardableResult
    public func up(_ options: Options) async throws -> LabState {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        var state: LabState
        if let existing = try LabState.load(directory: directory) {
            guard existing.mode == options.mode, existing.basePort == options.basePort else {
                throw LabError(
                    "a lab already exists in \(directory) with mode \(existing.mode.rawValue) and base port \(existing.basePort); run `bcpipe lab down --dir \(directory)` first to start one with other options"
                )
            }
            state = existing
            state.stuckThreshold = options.stuckThreshold
            state.lateData = options.lateData
            state.traffic = options.traffic
            state.prometheusRules = options.prometheusRules ?? existing.prometheusRules
        } else {
            guard options.basePort >= 1024, options.basePort + 100 < 32_768 else {
                throw LabError(
                    "--base-port must be between 1024 and 32667, so the lab's ports stay below Linux's ephemeral range")
            }
            state = LabState(
                basePort: options.basePort, mode: options.mode, stuckThreshold: options.stuckThreshold,
                lateData: options.lateData,
                sites: [
                    .init(name: "site1", index: 1, hasSources: true), .init(name: "site2", index: 2, hasSources: true),
                ], traffic: options.traffic)
            state.prometheusRules = options.prometheusRules
            state.queueRoot = options.queueRoot
            try checkPortsFree(state, except: [])
        }
        try state.save(directory: directory)
        try writeTopologies(state)
        for site in state.sites { try await startSite(state, site) }
        try startWAN(state)
        try startProcesses(state, options, sites: nil)
        if let rules = state.prometheusRules { try startPrometheus(state, rules: rules) }
        return state
    }

    /// Starts what is not running of the processes of `sites` (nil: every site): collectors,
    /// coordinators, traffic, extractors. Each runs detached, in its own session, and outlives
    /// the command that started it.
    func startProcesses(_ state: LabState, _ options: Options, sites: Set<String>?) throws {
        try startWitness(state, environment: options.collectorEnvironment)
        try startCollectors(state, environment: options.collectorEnvironment, sites: sites)
        try startCoordinators(state, environment: options.collectorEnvironment, sites: sites)
        if options.traffic > 0 { try startTraffic(state, rate: options.traffic, sites: sites) }
        if options.startExtractors {
            let only = options.extractorSites.map { mine in sites.map { $0.intersection(mine) } ?? mine } ?? sites
            try startExtractors(state, environment: options.collectorEnvironment, sites: only)
        }
    }

    /// The options the lab was brought up with, as recorded in its state.
    func recordedOptions(_ state: LabState) -> Options {
        var o = Options()
        o.mode = state.mode
        o.basePort = state.basePort
        o.stuckThreshold = state.stuckThreshold
        o.lateData = state.lateData
        o.traffic = state.traffic ?? 0
        o.prometheusRules = state.prometheusRules
        return o
    }

    /// Starts every site's extractor; a standby's idles until its mart is made active.
    func startExtractors(_ state: LabState, environment: [String: String], sites: Set<String>? = nil) throws {
        let topology = state.topology(directory: directory, viewpoint: nil)
        for e in topology.extractors where sites?.contains(e.site) ?? true {
            let pidFile = siteDirectory(e.site) + "/run/extractor.pid"
            if let pid = readPID(pidFile), Processes.isAlive(pid) { continue }
            guard state.site(e.site).map({ server(state, $0).isRunning }) == true else { continue }
            try FileManager.default.createDirectory(
                atPath: siteDirectory(e.site) + "/run", withIntermediateDirectories: true)
            let port = state.site(e.site).map(state.extractorMetricsPort) ?? 0
            let pid = try Processes.spawnDetached(
                [
                    executable, "extractor", "run", "--site", e.site, "--config", topologyPath(site: e.site),
                    "--listen", "127.0.0.1:\(port)",
                ],
                log: siteDirectory(e.site) + "/extractor.log",
                environment: environment.merging(["BCPIPE_DB_USER": "bcpipe_extractor"]) { mine, _ in mine })
            try "\(pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
        }
    }

    /// Live traffic (bcpipe gen --post) for each site with sources, as a process of that site: a
    /// failed site's contact center stops sending with it. Heartbeats keep idle sources advancing.
    func startTraffic(_ state: LabState, rate: Double, sites: Set<String>? = nil) throws {
        let topology = state.topology(directory: directory, viewpoint: nil)
        let sources = topology.sources
        for source in sources where sites?.contains(source.site) ?? true {
            guard let site = state.site(source.site), server(state, site).isRunning else { continue }
            let pidFile = siteDirectory(site.name) + "/run/traffic.pid"
            if let pid = readPID(pidFile), Processes.isAlive(pid) { continue }
            let pid = try Processes.spawnDetached(
                [
                    executable, "gen", "--post", "--rate", "\(rate / Double(sources.count))", "--sources", source.name,
                    "--duration", "31536000", "--start", "now", "--seed", "\(site.index)",
                    "--config", topologyPath(site: site.name),
                ],
                log: siteDirectory(site.name) + "/traffic.log")
            try "\(pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
        }
    }

    /// Starts the witness unless it runs, at the observers' location: with the direct topology
    /// file (it reaches every site without the WAN simulator) and in no site's directory, so
    /// `lab fail-site` leaves it alone.
    func startWitness(_ state: LabState, environment: [String: String]) throws {
        if let pid = readPID(witnessPIDPath), isLabProcess(pid) { return }
        let pid = try Processes.spawnDetached(
            [executable, "witness", "run", "--config", topologyPath, "--listen", "127.0.0.1:\(state.witnessPort)"],
            log: directory + "/witness.log", environment: environment)
        try "\(pid)\n".write(toFile: witnessPIDPath, atomically: true, encoding: .utf8)
        try waitUntil("the witness listens on \(state.witnessPort) (see \(directory)/witness.log)", timeout: 30) {
            Processes.isListening(state.witnessPort)
        }
    }

    /// Stops the witness (for tests of `dr declare` without one); `lab up` starts it again.
    public func stopWitness() throws {
        if let pid = readPID(witnessPIDPath), isLabProcess(pid) { Processes.stop(pid, grace: 5) }
        try? FileManager.default.removeItem(atPath: witnessPIDPath)
    }

    /// Starts the coordinator of every site whose server runs, and waits until each listens.
    func startCoordinators(_ state: LabState, environment: [String: String], sites: Set<String>? = nil) throws {
        var started: [(String, Int)] = []
        for site in state.sites where server(state, site).isRunning && sites?.contains(site.name) ?? true {
            let pidFile = siteDirectory(site.name) + "/run/coordinator.pid"
            if let pid = readPID(pidFile), Processes.isAlive(pid) { continue }
            try FileManager.default.createDirectory(
                atPath: siteDirectory(site.name) + "/run", withIntermediateDirectories: true)
            let pid = try Processes.spawnDetached(
                [executable, "coordinator", "run", "--site", site.name, "--config", topologyPath(site: site.name)],
                log: siteDirectory(site.name) + "/coordinator.log",
                environment: environment.merging(["BCPIPE_DB_USER": "bcpipe_coordinator"]) { mine, _ in mine })
            try "\(pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            started.append((site.name, state.coordinatorPort(site)))
        }
        for (name, port) in started {
            try waitUntil(
                "coordinator of \(name) listens on \(port) (see \(siteDirectory(name))/coordinator.log)", timeout: 30
            ) {
                Processes.isListening(port)
            }
        }
    }

    // MARK: pipeline processes

    /// Starts every collector that is not running, at its source's site, with that site's topology file.
    func startCollectors(_ state: LabState, environment: [String: String], sites: Set<String>? = nil) throws {
        let topology = state.topology(directory: directory, viewpoint: nil)
        var started: [(String, Int)] = []
        for collector in topology.collectors {
            guard let site = topology.sources.first(where: { $0.name == collector.source })?.site,
                sites?.contains(site) ?? true
            else { continue }
            let pidFile = siteDirectory(site) + "/run/collector-\(collector.name).pid"
            if let pid = readPID(pidFile), Processes.isAlive(pid) { continue }
            guard state.site(site).map({ server(state, $0).isRunning }) == true else { continue }
            try FileManager.default.createDirectory(
                atPath: siteDirectory(site) + "/run", withIntermediateDirectories: true)
            // Each collector logs in as its IDB's own role (SQL/idb/003_roles.sql).
            var own = environment
            own["BCPIPE_DB_USER"] = own["BCPIPE_DB_USER"] ?? "bcpipe_collector_\(collector.idb.database)"
            let pid = try Processes.spawnDetached(
                [executable, "collector", "run", "--name", collector.name, "--config", topologyPath(site: site)],
                log: siteDirectory(site) + "/collector-\(collector.name).log", environment: own)
            try "\(pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            started.append((collector.name, collector.listen.port))
        }
        for (name, port) in started {
            try waitUntil("collector \(name) listens on \(port) (see its log under \(directory)/sites)", timeout: 30) {
                Processes.isListening(port)
            }
        }
    }

    /// Where a collector's process id is kept.
    public func collectorPIDFile(_ name: String) throws -> String {
        let state = try requireState()
        let topology = state.topology(directory: directory, viewpoint: nil)
        guard let c = topology.collector(named: name),
            let site = topology.sources.first(where: { $0.name == c.source })?.site
        else { throw LabError("unknown collector \(name)") }
        return siteDirectory(site) + "/run/collector-\(name).pid"
    }

    /// SIGKILLs one collector (for fault tests); `lab up` starts it again.
    public func killCollector(_ name: String) throws {
        let file = try collectorPIDFile(name)
        guard let pid = readPID(file), isLabProcess(pid) else { return }
        kill(pid, SIGKILL)
        while Processes.isAlive(pid) { usleep(5_000) }
    }

    /// What the lab's processes run: the `bcpipe` executable it was given (also by its file
    /// name, for a lab started by another build of it) and PostgreSQL.
    var labExecutables: Set<String> {
        let resolved = URL(fileURLWithPath: executable).resolvingSymlinksInPath().path
        return [executable, resolved, (executable as NSString).lastPathComponent, "postgres", "prometheus"]
    }

    /// Stops every process the lab started and waits until none is left. The data stays unless `remove`.
    ///
    /// Only a directory that holds a lab (its `lab.json`) is touched: its recorded processes
    /// (pid files, checked to be still the lab's), its servers (`pg_ctl stop`), then any process
    /// left that runs the lab's executable or PostgreSQL from inside the directory. A directory
    /// that does not exist has nothing to stop.
    public func down(remove: Bool = false) throws {
        guard FileManager.default.fileExists(atPath: directory) else { return }
        guard let state = try LabState.load(directory: directory) else {
            throw LabError(
                "\(directory) holds no lab (no lab.json): nothing was stopped\(remove ? " or removed" : ""); give the --dir of a lab"
            )
        }
        if let pid = readPID(wanPIDPath), isLabProcess(pid) { Processes.stop(pid, grace: 5) }
        try? FileManager.default.removeItem(atPath: wanPIDPath)
        try stopWitness()
        stopPrometheus()
        for site in state.sites {
            stopSiteProcesses(site.name)
            try? server(state, site).stop()
        }
        // Anything of the lab's still running from this directory (a process whose pid file was lost).
        for attempt in 0..<50 {
            let left = Processes.processes(under: directory, executables: labExecutables)
            if left.isEmpty { break }
            for pid in left { kill(pid, attempt < 10 ? SIGTERM : SIGKILL) }
            usleep(100_000)
        }
        let left = Processes.processes(under: directory, executables: labExecutables)
        guard left.isEmpty else {
            throw LabError(
                "processes \(left.map(String.init).joined(separator: ", ")) of the lab in \(directory) would not stop")
        }
        if remove {
            // A queue disk of its own (the chaos run's disk-full fault) kept by `--keep`.
            for mountPoint in mounts(under: directory) { _ = try? Processes.run(["/bin/umount", "-l", mountPoint]) }
            try? FileManager.default.removeItem(atPath: directory)
            if let queues = state.queueRoot { try? FileManager.default.removeItem(atPath: queues) }
        }
    }

    /// Mount points inside `directory` (from /proc/self/mounts).
    func mounts(under directory: String) -> [String] {
        let table = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 1 else { return nil }
            // Spaces in mount points are written as \040.
            let point = fields[1].replacingOccurrences(of: "\\040", with: " ")
            return point.hasPrefix(directory + "/") ? point : nil
        }
    }

    /// Whether a recorded pid is still a process of this lab (not another that reused the pid).
    func isLabProcess(_ pid: pid_t) -> Bool {
        Processes.isLabProcess(pid, under: directory, executables: labExecutables)
    }

    // MARK: sites

    func startSite(_ state: LabState, _ site: LabState.Site) async throws {
        let server = server(state, site)
        if !server.isInitialized {
            logger.info(
                "initialising PostgreSQL", metadata: ["site": "\(site.name)", "port": "\(state.postgresPort(site))"])
            try server.initialize()
        }
        try server.start()
        // As `bcpipe db migrate --config SITE.yaml` at that site would: the other sites as this
        // one reaches them (through the WAN) become its mart's known publishers.
        let topology = state.topology(directory: directory, viewpoint: site.name)
        guard let topoSite = topology.site(named: site.name) else { return }
        _ = try await Migrator(logger: logger).migrateSite(topoSite, topology: topology)
    }

    /// SIGKILLs every process of a site and stops its PostgreSQL server immediately (a site disaster).
    public func failSite(_ name: String) throws {
        let state = try requireState()
        guard let site = state.site(name) else { throw unknownSite(name, state) }
        stopSiteProcesses(name, signal: SIGKILL)
        try server(state, site).stop(immediate: true)
    }

    /// Provisions an empty replacement site (its own server and ports), or rebuilds a failed site
    /// of the same name with an empty server; then starts the site's processes (its sources'
    /// collectors and traffic, its coordinator and extractor) with `options`, by default those
    /// the lab was brought up with. Returns when they listen: "ready" means running.
    @discardableResult
    public func addSite(_ name: String, options: Options? = nil) async throws -> LabState {
        var state = try requireState()
        guard name.range(of: "^[a-z][a-z0-9_-]{0,30}$", options: .regularExpression) != nil else {
            throw LabError("site name \"\(name)\" must be lower-case letters, digits, _ or -, starting with a letter")
        }
        if let existing = state.site(name) {
            let server = server(state, existing)
            guard !server.isRunning else {
                throw LabError(
                    "site \(name) is running; only a failed site (bcpipe lab fail-site \(name)) can be rebuilt")
            }
            try? FileManager.default.removeItem(atPath: server.dataDirectory)
            try await startSite(state, existing)
        } else {
            let used = Set(state.sites.map(\.index))
            guard let index = (1...LabState.maxSites).first(where: { !used.contains($0) }) else {
                throw LabError("the lab has room for \(LabState.maxSites) sites; remove one with lab down first")
            }
            let site = LabState.Site(name: name, index: index, hasSources: false)
            var next = state
            next.sites.append(site)
            try checkPortsFree(next, except: Set(state.ports.map(\.0)))
            state = next
            try state.save(directory: directory)
            try writeTopologies(state)
            try await startSite(state, site)
        }
        try startWAN(state)
        // The other sites' marts learn the new site as a publisher (db migrate at each site).
        for other in state.sites where other.name != name && server(state, other).isRunning {
            try await startSite(state, other)
        }
        try startProcesses(state, options ?? recordedOptions(state), sites: [name])
        return state
    }

    // MARK: WAN

    /// Cuts or restores the WAN between two sites (both directions) and waits until the simulator applied it.
    public func setLink(_ a: String, _ b: String, _ linkState: LinkState) throws {
        let state = try requireState()
        for s in [a, b] where state.site(s) == nil { throw unknownSite(s, state) }
        guard a != b else { throw LabError("a link joins two different sites (got \(a) twice)") }
        var config = (try? WANConfiguration.load(wanConfigPath)) ?? WANConfiguration()
        config.routes = state.routes
        config.links[WANConfiguration.linkKey(a, b)] = linkState
        config.generation += 1
        try config.save(wanConfigPath)
        guard readPID(wanPIDPath).map(Processes.isAlive) == true else {
            throw LabError("the WAN simulator is not running; run `bcpipe lab up --dir \(directory)`")
        }
        try waitForWANAck(config.generation)
    }

    /// The current state of every link.
    public func links() throws -> [(String, String, LinkState)] {
        let state = try requireState()
        let config = (try? WANConfiguration.load(wanConfigPath)) ?? WANConfiguration()
        var out: [(String, String, LinkState)] = []
        for (i, a) in state.sites.enumerated() {
            for b in state.sites[(i + 1)...] {
                out.append((a.name, b.name, config.links[WANConfiguration.linkKey(a.name, b.name)] ?? .up))
            }
        }
        return out
    }

    func startWAN(_ state: LabState) throws {
        var config = (try? WANConfiguration.load(wanConfigPath)) ?? WANConfiguration()
        config.routes = state.routes
        config.generation += 1
        try config.save(wanConfigPath)
        if let pid = readPID(wanPIDPath), Processes.isAlive(pid) {
            try waitForWANAck(config.generation)
            return
        }
        let pid = try Processes.spawnDetached(
            [executable, "lab", "wan-simulator", "--dir", directory], log: directory + "/wan.log")
        try "\(pid)\n".write(toFile: wanPIDPath, atomically: true, encoding: .utf8)
        try waitForWANAck(config.generation)
        for route in state.routes where config.state(of: route) != .refuse {
            try waitUntil("the WAN simulator listens on \(route.listen)", timeout: 10) {
                Processes.isListening(route.listen)
            }
        }
    }

    func waitForWANAck(_ generation: Int) throws {
        try waitUntil("the WAN simulator applies its configuration (see \(directory)/wan.log)", timeout: 10) {
            let text = (try? String(contentsOfFile: wanAckPath, encoding: .utf8)) ?? ""
            return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)).map { $0 >= generation } ?? false
        }
    }

    // MARK: status

    /// One line per part of the lab.
    public func status() throws -> [String] {
        let state = try requireState()
        var lines: [String] = [
            "lab \(directory): mode \(state.mode.rawValue), stuck threshold \(state.stuckThreshold) s, late data \(state.lateData.rawValue)"
        ]
        let topology = state.topology(directory: directory, viewpoint: nil)
        for site in state.sites {
            let s = server(state, site)
            lines.append(
                "  \(site.name): PostgreSQL 127.0.0.1:\(state.postgresPort(site)) \(s.isRunning ? "running" : "stopped")"
            )
            let run = siteDirectory(site.name) + "/run/"
            if s.isRunning || readPID(run + "coordinator.pid") != nil {
                let alive = readPID(run + "coordinator.pid").map(Processes.isAlive) ?? false
                lines.append(
                    "    coordinator 127.0.0.1:\(state.coordinatorPort(site)): \(alive ? "running" : "stopped")")
            }
            if let pid = readPID(run + "traffic.pid") {
                lines.append("    traffic (bcpipe gen --post): \(Processes.isAlive(pid) ? "running" : "stopped")")
            }
            if let e = topology.extractors.first(where: { $0.site == site.name }) {
                let alive = readPID(siteDirectory(site.name) + "/run/extractor.pid").map(Processes.isAlive) ?? false
                let state = alive ? "running" : e.role == .standby ? "not started (standby)" : "stopped"
                lines.append("    extractor (\(e.role.rawValue)) → \(site.name)/mart: \(state)")
            }
            for c in topology.collectors where topology.sources.first(where: { $0.name == c.source })?.site == site.name
            {
                let alive =
                    readPID(siteDirectory(site.name) + "/run/collector-\(c.name).pid").map(Processes.isAlive) ?? false
                lines.append(
                    "    collector \(c.name) \(c.listen) → \(c.idb.site)/\(c.idb.database): \(alive ? "running" : "stopped")"
                )
            }
        }
        let wanUp = readPID(wanPIDPath).map(Processes.isAlive) ?? false
        lines.append("  WAN simulator: \(wanUp ? "running" : "stopped")")
        let witnessUp = readPID(witnessPIDPath).map(Processes.isAlive) ?? false
        lines.append(
            "  witness 127.0.0.1:\(state.witnessPort) (observers' location): \(witnessUp ? "running" : "stopped")")
        if state.prometheusRules != nil {
            let up = readPID(prometheusPIDPath).map(Processes.isAlive) ?? false
            lines.append(
                "  Prometheus http://127.0.0.1:\(state.prometheusPort) (alerts: /alerts): \(up ? "running" : "stopped")"
            )
        }
        for (a, b, link) in try links() { lines.append("  link \(a) ↔ \(b): \(link.rawValue)") }
        return lines
    }

    // MARK: helpers

    public func requireState() throws -> LabState {
        guard let state = try LabState.load(directory: directory) else {
            throw LabError("no lab in \(directory); start one with `bcpipe lab up --dir \(directory)`")
        }
        return state
    }

    func unknownSite(_ name: String, _ state: LabState) -> LabError {
        LabError("unknown site \"\(name)\"; the lab's sites are \(state.sites.map(\.name).joined(separator: ", "))")
    }

    func writeTopologies(_ state: LabState) throws {
        try state.topology(directory: directory, viewpoint: nil).yaml(relativeTo: directory)
            .write(toFile: topologyPath, atomically: true, encoding: .utf8)
        for site in state.sites {
            try state.topology(directory: directory, viewpoint: site.name).yaml(relativeTo: directory)
                .write(toFile: topologyPath(site: site.name), atomically: true, encoding: .utf8)
        }
    }

    func checkPortsFree(_ state: LabState, except: Set<Int>) throws {
        for (port, what) in state.ports where !except.contains(port) && !Processes.isPortFree(port) {
            throw LabError(
                "port \(port) (\(what)) is in use by another process; stop it or choose another range with --base-port")
        }
    }

    /// Pids of the site's bcpipe processes (collectors, extractor, coordinator), from `sites/NAME/run/*.pid`.
    func stopSiteProcesses(_ name: String, signal: Int32 = SIGTERM) {
        let run = siteDirectory(name) + "/run"
        for file in (try? FileManager.default.contentsOfDirectory(atPath: run)) ?? [] where file.hasSuffix(".pid") {
            if let pid = readPID(run + "/" + file), isLabProcess(pid) {
                if signal == SIGKILL {
                    kill(pid, SIGKILL)
                    while Processes.isAlive(pid) { usleep(10_000) }
                } else {
                    Processes.stop(pid)
                }
            }
            try? FileManager.default.removeItem(atPath: run + "/" + file)
        }
    }

    func readPID(_ path: String) -> pid_t? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    func waitUntil(_ what: String, timeout: Double, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { throw LabError("timed out after \(Int(timeout)) s waiting until \(what)") }
            usleep(20_000)
        }
    }
}
