import Demo
import Foundation
import Lab
import Logging
import PostgresClient
import Testing
import Topology
import Traffic

#if canImport(Glibc)
    import Glibc
#endif

/// The lab the integration tests share: started once per test process in a temporary
/// directory, stopped and removed when the process exits.
///
/// Ports come from `BCPIPE_TEST_BASE_PORT` (default 27100); tests that need a lab of their own
/// use ``TestLab/fresh(offset:)`` with a distinct offset.
actor TestLab {
    static let shared = TestLab()
    private var starting: Task<LocalLab, Error>?

    static var basePort: Int {
        ProcessInfo.processInfo.environment["BCPIPE_TEST_BASE_PORT"].flatMap(Int.init) ?? 27_100
    }

    /// The `bcpipe` executable built beside the test bundle (the lab runs its WAN simulator).
    static var executable: String {
        if let env = ProcessInfo.processInfo.environment["BCPIPE_BIN"] { return env }
        let me =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("bcpipe").path
    }

    static func makeLab(name: String) throws -> LocalLab {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw LabError(
                "the bcpipe executable is not at \(executable): build it first (swift build), or set BCPIPE_BIN")
        }
        let dir = "/tmp/bcpipe-test-\(getpid())-\(name)"
        var logger = Logger(label: "test-lab")
        logger.logLevel = .warning
        return LocalLab(directory: dir, executable: executable, logger: logger)
    }

    /// The shared lab, started on first use.
    func get() async throws -> LocalLab {
        // One start however many suites ask at once (the actor is re-entered across the await).
        if let starting { return try await starting.value }
        let task = Task<LocalLab, Error> {
            let lab = try Self.makeLab(name: "shared")
            TestLab.registerCleanup(lab)
            var options = LocalLab.Options()
            options.basePort = Self.basePort
            options.stuckThreshold = 20
            try await lab.up(options)
            return lab
        }
        starting = task
        return try await task.value
    }

    /// A lab of the test's own (for tests that stop or break it), on `basePort + offset`.
    static func fresh(offset: Int, name: String) async throws -> LocalLab {
        let lab = try makeLab(name: name)
        var options = LocalLab.Options()
        options.basePort = basePort + offset
        try await lab.up(options)
        registerCleanup(lab)
        return lab
    }

    nonisolated(unsafe) private static var cleanups: [LocalLab] = []
    private static let cleanupLock = NSLock()

    static func registerCleanup(_ lab: LocalLab) {
        cleanupLock.lock()
        defer { cleanupLock.unlock() }
        if cleanups.isEmpty {
            atexit {
                TestLab.cleanupLock.lock()
                let labs = TestLab.cleanups
                TestLab.cleanupLock.unlock()
                for lab in labs { try? lab.down(remove: true) }
            }
        }
        cleanups.append(lab)
    }

    /// A connection to a database of a site, directly or as `viewpoint` sees it (through the WAN).
    /// Rows of `site`'s report views that differ from a recount of its event layer (what an
    /// event extracted twice would damage; `mart.event`'s key alone cannot show it).
    static func expectViewsMatchTheirEvents(
        _ lab: LocalLab, site: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let m = try await miscounted(lab, site: site)
        #expect(
            m.total == 0,
            "\(site)'s views differ from a recount of its events: queue_hourly \(m.queueHourly), agent_daily \(m.agentDaily), interactions \(m.interactions) rows",
            sourceLocation: sourceLocation)
    }

    static func miscounted(_ lab: LocalLab, site: String) async throws
        -> ViewRecount.Mismatches
    {
        let c = try await connect(lab, site: site, database: "mart")
        do {
            let sla = Int64(try Topology.load(path: lab.topologyPath).reporting.slaSeconds) * 1000
            let m = try await ViewRecount.mismatches(c, slaMs: sla)
            await c.close()
            return m
        } catch {
            await c.close()
            throw error
        }
    }

    static func connect(
        _ lab: LocalLab, site: String, database: String, viewpoint: String? = nil,
        configure: (inout PostgresConfiguration) -> Void = { _ in }
    ) async throws -> PostgresConnection {
        let state = try lab.requireState()
        let topology = state.topology(directory: lab.directory, viewpoint: viewpoint)
        var config = PostgresConfiguration(conninfo: topology.site(named: site)!.postgres, database: database)
        configure(&config)
        return try await PostgresConnection.connect(config)
    }
}

/// The seed of a test's random choices (kill timings): `BCPIPE_TEST_SEED` when set, to replay a
/// failure, else a fresh one. Printed, and put in the test's failure messages.
enum TestSeed {
    static func make(_ test: String) -> UInt64 {
        let seed =
            ProcessInfo.processInfo.environment["BCPIPE_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64(UInt32.max))
        print("\(test): seed \(seed) (replay with BCPIPE_TEST_SEED=\(seed))")
        return seed
    }
}

/// Waits until `condition` holds, checking every `every` seconds, and throws (naming `what`) once
/// `timeout` has passed. With `retryingErrors`, an error (a server not answering yet) counts as
/// "not yet" and is named at the deadline; otherwise it ends the wait at once.
func waitUntil(
    _ what: String, timeout: Double, every: Double = 0.2, retryingErrors: Bool = false,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var lastError: (any Error)?
    while true {
        do {
            if try await condition() { return }
        } catch  where retryingErrors {
            lastError = error
        }
        guard Date() < deadline else {
            throw LabError(
                "timed out after \(Int(timeout)) s waiting until \(what)\(lastError.map { " (last error: \($0))" } ?? "")"
            )
        }
        try await Task.sleep(for: .seconds(every))
    }
}
