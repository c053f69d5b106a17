import Foundation
import PostgresClient

#if canImport(Glibc)
    import Glibc
#endif

/// One PostgreSQL 15 server of the lab, in its own data directory on its own port.
///
/// When bcpipe runs as root the server runs as the `postgres` OS user (PostgreSQL refuses root).
public struct PostgresServer: Sendable {
    public var dataDirectory: String
    public var logFile: String
    public var port: Int

    public init(directory: String, port: Int) {
        dataDirectory = directory + "/pgdata"
        logFile = directory + "/postgres.log"
        self.port = port
    }

    /// Where initdb and pg_ctl are: `$BCPIPE_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin`.
    public static func binDirectory() throws -> String {
        try PostgresTools.binDirectory(containing: "pg_ctl")
    }

    static var runningAsRoot: Bool { geteuid() == 0 }

    /// Runs a PostgreSQL tool, as the `postgres` user when we are root.
    func tool(_ name: String, _ args: [String], timeout: Double = 120) throws -> Processes.Output {
        let path = try Self.binDirectory() + "/" + name
        let command = Self.runningAsRoot ? ["/usr/sbin/runuser", "-u", "postgres", "--", path] + args : [path] + args
        return try Processes.run(command, timeout: timeout)
    }

    /// Hands a directory to the `postgres` user (when root), creating it.
    static func prepareDirectory(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard runningAsRoot else { return }
        guard let pw = getpwnam("postgres") else {
            throw LabError("running as root but there is no postgres OS user; install postgresql-15, which creates it")
        }
        chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid)
    }

    public var isInitialized: Bool { FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") }

    /// Creates the cluster (superuser `bcpipe`, trust authentication on loopback only) and writes its settings.
    public func initialize() throws {
        let directory = (dataDirectory as NSString).deletingLastPathComponent
        try Self.prepareDirectory(directory)
        if Self.runningAsRoot {
            let check = try Processes.run([
                "/usr/sbin/runuser", "-u", "postgres", "--", "/usr/bin/test", "-w", directory,
            ])
            guard check.status == 0 else {
                throw LabError(
                    "the postgres OS user cannot write \(directory); put the lab in a directory every user can traverse (e.g. under /tmp or /work)"
                )
            }
        }
        let out = try tool(
            "initdb", ["-D", dataDirectory, "-U", "bcpipe", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        guard out.status == 0 else { throw LabError("initdb failed for \(dataDirectory):\n\(out.text)") }
        let settings = """

            # bcpipe lab
            port = \(port)
            listen_addresses = '127.0.0.1'
            unix_socket_directories = ''
            max_connections = 300
            # A site's server, sized like one rather than like initdb's defaults: a mart of
            # millions of events stays in memory, and bulk cycles do not checkpoint every minute.
            # (Shared memory is touched as it is used: an idle test lab costs little of it.)
            shared_buffers = 1GB
            work_mem = 16MB
            maintenance_work_mem = 128MB
            max_wal_size = 4GB
            wal_level = logical
            max_wal_senders = 16
            max_replication_slots = 16
            max_logical_replication_workers = 8
            log_min_messages = warning
            log_line_prefix = '%m [%p] %q%u@%d '
            """
        let conf = dataDirectory + "/postgresql.conf"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: conf))
        handle.seekToEndOfFile()
        handle.write(Data(settings.utf8))
        try handle.close()
    }

    /// The postmaster's pid from `postmaster.pid`, if that process is alive.
    public var postmasterPID: pid_t? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first), Processes.isAlive(pid)
        else { return nil }
        return pid
    }

    public var isRunning: Bool { postmasterPID != nil }

    /// Starts the server and waits until it accepts connections.
    public func start() throws {
        if isRunning { return }
        guard Processes.isPortFree(port) else {
            throw LabError(
                "port \(port) is in use by another process, so the PostgreSQL server of \(dataDirectory) cannot start; stop that process or choose other ports with --base-port"
            )
        }
        let out = try tool("pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "start"], timeout: 90)
        guard out.status == 0 else {
            let tail =
                (try? String(contentsOfFile: logFile, encoding: .utf8))?.split(separator: "\n").suffix(10).joined(
                    separator: "\n") ?? ""
            throw LabError("PostgreSQL on port \(port) did not start:\n\(out.text)\n\(tail)")
        }
    }

    /// Stops the server: `fast` (clean) or `immediate` (like a crash; recovery runs on next start).
    public func stop(immediate: Bool = false) throws {
        guard isRunning else { return }
        let out = try tool(
            "pg_ctl", ["-D", dataDirectory, "-m", immediate ? "immediate" : "fast", "-w", "-t", "30", "stop"],
            timeout: 45)
        if out.status != 0, let pid = postmasterPID {
            // pg_ctl gave up: make sure nothing is left behind.
            kill(pid, SIGKILL)
        }
    }
}
