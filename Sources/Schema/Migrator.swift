import Logging
import PostgresClient
import Topology

/// A migration problem an operator must resolve.
public struct MigrationError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// Applies the embedded migrations to databases, idempotently, recording each in a version table.
public struct Migrator: Sendable {
    public let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    static let versionTable = """
        CREATE TABLE IF NOT EXISTS public.bcpipe_migrations (
            component  text        NOT NULL,
            version    integer     NOT NULL,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (component, version)
        )
        """
    /// Serialises concurrent migrators of the same database.
    static let lockKey: Int64 = 0x6263_7069_7065_6d67  // "bcpipemg"

    /// Applies every pending migration of `component` on `connection`. Returns the versions applied.
    ///
    /// #### Errors
    /// ``MigrationError`` when an applied migration's SQL has changed since, or the database holds a
    /// newer version than this binary knows; ``PostgresError`` when a statement fails (that
    /// migration is rolled back and the rest are not attempted).
    @discardableResult
    public func migrate(_ connection: PostgresConnection, component: Migration.Component) async throws -> [Int] {
        let migrations = Migration.of(component)
        let log = logger
        return try await connection.transaction { conn in
            try await conn.query("SELECT pg_advisory_xact_lock($1)", [Migrator.lockKey])
            try conn.execute(Migrator.versionTable)
            let rows = try await conn.query(
                "SELECT version, checksum FROM public.bcpipe_migrations WHERE component = $1 ORDER BY version",
                [component.rawValue])
            var applied: [Int: String] = [:]
            for row in rows { applied[try row.decode(0, as: Int.self)] = try row.decode(1, as: String.self) }
            if let newest = applied.keys.max(), newest > (migrations.last?.version ?? 0) {
                throw MigrationError(
                    message:
                        "the \(component.rawValue) database is at version \(newest), newer than this bcpipe knows (\(migrations.last?.version ?? 0)); upgrade bcpipe"
                )
            }
            var done: [Int] = []
            for m in migrations {
                if let checksum = applied[m.version] {
                    guard checksum == m.checksum else {
                        throw MigrationError(
                            message:
                                "migration \(component.rawValue)/\(m.version)_\(m.name) changed after it was applied; add a new migration instead of editing it"
                        )
                    }
                    continue
                }
                log.info("applying migration", metadata: ["migration": "\(component.rawValue)/\(m.version)_\(m.name)"])
                try conn.execute(m.sql)
                try await conn.query(
                    "INSERT INTO public.bcpipe_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)",
                    [component.rawValue, m.version, m.name, m.checksum])
                done.append(m.version)
            }
            return done
        }
    }

    /// Migrations run as the conninfo's role (the owner), whatever `BCPIPE_DB_USER` says.
    static func owner(_ conninfo: String, _ database: String) -> PostgresConfiguration {
        var config = PostgresConfiguration(conninfo: conninfo, database: database)
        config.user = nil
        return config
    }

    /// Creates `database` on the server if it does not exist (needs CREATEDB).
    public func ensureDatabase(_ database: String, conninfo: String) async throws {
        let admin = try await PostgresConnection.connect(Self.owner(conninfo, "postgres"), logger: logger)
        do {
            let exists = try await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database])
            if exists.isEmpty {
                logger.info("creating database", metadata: ["database": "\(database)"])
                do {
                    try await admin.execute("CREATE DATABASE \(PostgresConnection.quoteIdentifier(database))")
                } catch let e as PostgresError where e.sqlState == "42P04" || e.sqlState == "23505" {
                    // Created concurrently by another migrator: fine.
                }
            }
            await admin.close()
        } catch {
            await admin.close()
            throw error
        }
    }

    /// Creates and migrates every database of `site` (its IDBs and its mart).
    /// Returns a line per database saying what was applied.
    static let upsertPublisher = """
        INSERT INTO control.publisher (site, conninfo) VALUES ($1, $2)
        ON CONFLICT (site) DO UPDATE SET conninfo = EXCLUDED.conninfo, updated_at = now()
        WHERE control.publisher.conninfo IS DISTINCT FROM EXCLUDED.conninfo
        """
    static let deleteOtherPublishers = "DELETE FROM control.publisher WHERE NOT (site = ANY($1::text[]))"

    /// Records, as the owner, the servers this site's mart may subscribe to: every other site of
    /// the topology, as this site reaches it (`control.subscribe` accepts no other).
    func recordPublishers(_ conn: PostgresConnection, topology: Topology, site: String) async throws {
        let others = topology.sites.filter { $0.name != site }
        try await conn.transaction { c in
            for s in others { try await c.query(Self.upsertPublisher, [s.name, s.postgres]) }
            try await c.query(Self.deleteOtherPublishers, ["{" + others.map(\.name).joined(separator: ",") + "}"])
        }
    }

    public func migrateSite(_ site: Topology.Site, topology: Topology) async throws -> [String] {
        var report: [String] = []
        for database in topology.databases(atSite: site.name) {
            try await ensureDatabase(database, conninfo: site.postgres)
            let conn = try await PostgresConnection.connect(Self.owner(site.postgres, database), logger: logger)
            let component: Migration.Component = database == Topology.martDatabase ? .mart : .idb
            do {
                let applied = try await migrate(conn, component: component)
                if component == .mart { try await recordPublishers(conn, topology: topology, site: site.name) }
                await conn.close()
                let latest = Migration.of(component).last?.version ?? 0
                report.append(
                    "\(site.name)/\(database): \(applied.isEmpty ? "up to date" : "applied \(applied.map(String.init).joined(separator: ", "))") (version \(latest))"
                )
            } catch {
                await conn.close()
                throw error
            }
        }
        return report
    }
}
