import Foundation
import Lab
import Logging
import PostgresClient
import Topology

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
