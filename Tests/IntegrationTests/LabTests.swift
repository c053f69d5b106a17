import Foundation
import Lab
import PostgresClient
import Schema
import Testing
import Topology

#if canImport(Glibc)
    import Glibc
#endif

@Suite("WAN link simulator", .serialized)
struct WANTests {
    /// A connection from site1's point of view to site2's mart: through the WAN simulator.
    func remote(_ lab: LocalLab, timeout: Double = 3) async throws -> PostgresConnection {
        try await TestLab.connect(lab, site: "site2", database: "mart", viewpoint: "site1") {
            $0.connectTimeout = 2
            $0.operationTimeout = timeout
        }
    }

    @Test func carriesTrafficBothWays() async throws {
        let lab = try await TestLab.shared.get()
        let conn = try await remote(lab, timeout: 30)
        try await conn.query("CREATE TEMP TABLE w (s text)")
        let payload = String(repeating: "0123456789abcdef", count: 4096)  // 64 KiB a row
        try await conn.transaction { c in
            try c.copyIn("COPY w FROM STDIN") { sink in
                var row = CopyRow()
                for _ in 0..<64 {
                    row.reset()
                    row.append(payload)
                    row.end()
                    try sink.write(row)
                }
            }
        }
        let rows = try await conn.query("SELECT sum(length(s))::bigint, max(s) = $1 FROM w", [payload])
        #expect(try rows[0].decode(0, as: Int64.self) == 64 * 65_536)
        #expect(try rows[0].decode(1, as: Bool.self))
        await conn.close()
    }

    @Test func aBlackholedLinkFailsWithinTheTimeoutInsteadOfHanging() async throws {
        let lab = try await TestLab.shared.get()
        let conn = try await remote(lab, timeout: 3)
        #expect(try await conn.query("SELECT 1").count == 1)
        try lab.setLink("site1", "site2", .blackhole)
        defer { try? lab.setLink("site1", "site2", .up) }

        var started = Date()
        do {
            try await conn.query("SELECT 1")
            Issue.record("a query across a black hole must not succeed")
        } catch let e as PostgresError {
            #expect(e.code == .timeout)
            #expect(e.isConnectionProblem)
        }
        let queryWait = Date().timeIntervalSince(started)
        #expect(queryWait >= 2.5 && queryWait < 8, "failed after \(queryWait) s; the deadline is 3 s")
        #expect(await conn.isOpen == false, "a timed-out connection is closed, not reused")

        started = Date()
        await #expect(throws: PostgresError.self) { _ = try await remote(lab) }
        let connectWait = Date().timeIntervalSince(started)
        #expect(connectWait < 8, "connect gave up after \(connectWait) s; connect_timeout is 2 s")

        try lab.setLink("site1", "site2", .up)
        let again = try await remote(lab)
        #expect(try await again.query("SELECT 1").count == 1, "the link works again once restored")
        await again.close()
    }

    @Test func aRefusedLinkResetsConnectionsAtOnce() async throws {
        let lab = try await TestLab.shared.get()
        let conn = try await remote(lab, timeout: 10)
        try lab.setLink("site1", "site2", .refuse)
        defer { try? lab.setLink("site1", "site2", .up) }
        let started = Date()
        do {
            try await conn.query("SELECT 1")
            Issue.record("must fail")
        } catch let e as PostgresError {
            #expect(e.isConnectionProblem)
            #expect(e.code == .connectionLost)
        }
        await #expect(throws: PostgresError.self) { _ = try await remote(lab) }
        #expect(Date().timeIntervalSince(started) < 3, "a refused link is noticed at once")
        #expect(try lab.links().first { $0.0 == "site1" && $0.1 == "site2" }?.2 == .refuse)
        try lab.setLink("site1", "site2", .up)
        let again = try await remote(lab)
        #expect(try await again.query("SELECT 1").count == 1)
        await again.close()
    }
}

@Suite("Lab life cycle", .serialized)
struct LabLifecycleTests {
    static func labProcesses(_ lab: LocalLab) -> [pid_t] { Processes.processes(under: lab.directory) }

    @Test func upIsIdempotentMigrationsToo_downLeavesNoProcess() async throws {
        let lab = try await TestLab.fresh(offset: 100, name: "lifecycle")
        let state = try lab.requireState()
        let before = state.sites.map {
            PostgresServer(directory: lab.directory + "/sites/\($0.name)", port: state.postgresPort($0)).postmasterPID
        }
        #expect(before.allSatisfy { $0 != nil })

        var options = LocalLab.Options()
        options.basePort = state.basePort
        try await lab.up(options)
        let after = state.sites.map {
            PostgresServer(directory: lab.directory + "/sites/\($0.name)", port: state.postgresPort($0)).postmasterPID
        }
        #expect(before == after, "a second lab up leaves the running servers alone")

        // Every database exists and is migrated; migrating again applies nothing.
        let topology = try Topology.load(path: lab.topologyPath)
        for site in topology.sites {
            let report = try await Migrator(logger: lab.logger).migrateSite(site, topology: topology)
            #expect(report.count == 3)
            #expect(report.allSatisfy { $0.contains("up to date") }, "\(report)")
        }
        let idb = try await TestLab.connect(lab, site: "site2", database: "idb_site1_b")
        let versions = try await idb.query("SELECT component, version FROM public.bcpipe_migrations ORDER BY 1, 2")
        #expect(versions.map { $0[0] ?? "" } == Migration.of(.idb).map { _ in "idb" }, "only the IDB's migrations")
        #expect(try await idb.query("SELECT to_regclass('idb.events') IS NOT NULL")[0].decode(0, as: Bool.self))
        await idb.close()

        // Other options on an existing lab are refused with what to do.
        var other = options
        other.mode = .activeActive
        await #expect(throws: LabError.self) { try await lab.up(other) }

        // Catches a lab down that kills whatever runs in or names the directory: a process of
        // someone else's working there (here a shell with its cwd in the lab) is left alone.
        let bystander = try Processes.spawnDetached(
            ["/bin/bash", "-c", "cd '\(lab.directory)' && exec sleep 600"], log: "/dev/null")
        defer { kill(bystander, SIGKILL) }
        try await CollectorTests.waitUntil("the bystander works in the lab directory") {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(bystander)/cwd")) == lab.directory
        }
        #expect(!Self.labProcesses(lab).isEmpty)
        let down = try await Processes.output([TestLab.executable, "lab", "down", "--dir", lab.directory])
        #expect(down.status == 0, "\(down.text)")
        #expect(
            Processes.processes(under: lab.directory) == [bystander], "lab down leaves no process of the lab behind")
        #expect(Processes.isAlive(bystander), "and only the lab's processes were stopped")
        for pid in before.compactMap({ $0 }) { #expect(!Processes.isAlive(pid)) }
        try lab.down(remove: true)
    }

    // Catches `lab down --remove` deleting any directory it is given.
    @Test func downRefusesADirectoryThatHoldsNoLab() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-lab-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "precious".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        let down = try await Processes.output([TestLab.executable, "lab", "down", "--dir", dir, "--remove"])
        #expect(down.status == 1)
        #expect(down.text.contains("holds no lab (no lab.json): nothing was stopped or removed"), "\(down.text)")
        #expect(FileManager.default.fileExists(atPath: dir + "/notes.txt"))
        let gone = try await Processes.output([TestLab.executable, "lab", "down", "--dir", dir + "/never-made"])
        #expect(gone.status == 0, "a lab that does not exist has nothing to stop: \(gone.text)")
    }

    @Test func aPortInUseIsAClearError() async throws {
        let base = TestLab.basePort + 200
        let blocker = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(blocker) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(base + 12).bigEndian)  // site2's PostgreSQL
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(blocker, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0)
        listen(blocker, 1)
        let lab = try TestLab.makeLab(name: "port-in-use")
        defer { try? lab.down(remove: true) }
        var options = LocalLab.Options()
        options.basePort = base
        do {
            try await lab.up(options)
            Issue.record("lab up must refuse a busy port")
        } catch let e as LabError {
            #expect(e.message.contains("port \(base + 12) (site2 PostgreSQL) is in use"), "\(e.message)")
            #expect(e.message.contains("--base-port"))
        }
    }

    @Test func failSiteThenAddSite() async throws {
        let lab = try await TestLab.fresh(offset: 300, name: "failover")
        defer { try? lab.down(remove: true) }
        var state = try lab.requireState()
        let site2 = PostgresServer(directory: lab.directory + "/sites/site2", port: state.postgresPort(state.sites[1]))
        try lab.failSite("site2")
        #expect(!site2.isRunning)
        #expect(throws: LabError.self) { try lab.failSite("site9") }

        state = try await lab.addSite("site3")
        let site3 = try #require(state.site("site3"))
        #expect(site3.hasSources == false)
        // Catches add-site leaving the site's processes unstarted (issue 15): "ready" means running.
        #expect(Processes.isListening(state.coordinatorPort(site3)), "site3's coordinator runs")
        let topology = try Topology.load(path: lab.topologyPath(site: "site3"))
        #expect(topology.sites.map(\.name) == ["site1", "site2", "site3"])
        let mart = try await TestLab.connect(lab, site: "site3", database: "mart")
        #expect(try await mart.query("SELECT phase FROM control.deployment")[0].decode(0, as: String.self) == "normal")
        await mart.close()
        // site3 reaches site1 through the WAN simulator.
        let viaWAN = try await TestLab.connect(lab, site: "site1", database: "mart", viewpoint: "site3")
        #expect(try await viaWAN.query("SELECT 1").count == 1)
        await viaWAN.close()

        // A failed site can be rebuilt empty under its own name.
        state = try await lab.addSite("site2")
        #expect(site2.isRunning)
        let rebuilt = try #require(state.site("site2"))
        #expect(Processes.isListening(state.coordinatorPort(rebuilt)))
        for member in 0..<2 {
            #expect(
                Processes.isListening(state.collectorPort(siteIndex: rebuilt.index, member: member)),
                "site2's collectors run again")
        }
        await #expect(throws: LabError.self) { try await lab.addSite("site1") }
    }
}
