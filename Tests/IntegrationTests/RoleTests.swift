import Coordinator
import Foundation
import Lab
import PostgresClient
import Testing
import Topology

/// Least privilege (SQL/idb/003–004, SQL/mart/005–007): what each role the migrations
/// create may and may not do, on the lab's real servers, and that the lab's processes log in as
/// them. Everything a role may do is tried inside a transaction that is rolled back.
@Suite("Database roles", .serialized)
struct RoleTests {
    static let insufficientPrivilege = "42501"

    static func connect(_ topology: Topology, site: String, database: String, user: String) async throws
        -> PostgresConnection
    {
        var config = PostgresConfiguration(conninfo: topology.site(named: site)!.postgres, database: database)
        config.user = user
        config.connectTimeout = 5
        return try await PostgresConnection.connect(config)
    }

    /// The statement is refused for lack of privilege (SQLSTATE 42501), and nothing changes.
    static func refused(_ c: PostgresConnection, _ sql: String, sourceLocation: SourceLocation = #_sourceLocation)
        async
    {
        do {
            try await c.execute("BEGIN")
            _ = try await c.query(sql)
            Issue.record("allowed: \(sql)", sourceLocation: sourceLocation)
        } catch let e as PostgresError {
            #expect(e.sqlState == insufficientPrivilege, "\(sql): \(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(sql): \(error)", sourceLocation: sourceLocation)
        }
        _ = try? await c.execute("ROLLBACK")
    }

    /// The statement is allowed (and rolled back); with `expectFailure`, it runs and fails for
    /// a reason other than privilege, whose message holds that text.
    static func allowed(
        _ c: PostgresConnection, _ sql: String, expectFailure: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            try await c.execute("BEGIN")
            try await c.execute(sql)
            if let expectFailure {
                Issue.record("\(sql) did not fail with \(expectFailure)", sourceLocation: sourceLocation)
            }
        } catch let e as PostgresError where expectFailure != nil {
            #expect(
                e.sqlState != insufficientPrivilege && e.description.contains(expectFailure!), "\(sql): \(e)",
                sourceLocation: sourceLocation)
        } catch {
            Issue.record("refused: \(sql): \(error)", sourceLocation: sourceLocation)
        }
        _ = try? await c.execute("ROLLBACK")
    }

    /// The statement fails with SQLSTATE `state` and a message holding `text`, and changes nothing.
    static func refusedWith(
        _ c: PostgresConnection, _ sql: String, _ state: String, _ text: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            try await c.execute("BEGIN")
            _ = try await c.query(sql)
            Issue.record("allowed: \(sql)", sourceLocation: sourceLocation)
        } catch let e as PostgresError {
            #expect(e.sqlState == state && e.description.contains(text), "\(sql): \(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(sql): \(error)", sourceLocation: sourceLocation)
        }
        _ = try? await c.execute("ROLLBACK")
    }

    /// Connecting is refused: no CONNECT privilege on that database.
    static func cannotConnect(
        _ t: Topology, site: String, database: String, user: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            let c = try await connect(t, site: site, database: database, user: user)
            await c.close()
            Issue.record("\(user) connected to \(site)/\(database)", sourceLocation: sourceLocation)
        } catch let e as PostgresError {
            #expect(
                e.description.contains("permission denied for database"), "\(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func eachRoleMayDoItsJobAndNothingElse() async throws {
        let lab = try TestLab.makeLab(name: "roles")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3400
        o.stuckThreshold = 3600
        o.traffic = 50
        try await lab.up(o)
        let t = try Topology.load(path: lab.topologyPath)
        let event =
            "INSERT INTO idb.events (source, seq, ts, type, agent) VALUES ('site1/voice', 1, now(), 'agent.login', 'a1')"

        // A collector: appends to its own IDB, changes nothing stored, reaches nothing else.
        let collector = "bcpipe_collector_idb_site1_a"
        let idb = try await Self.connect(t, site: "site1", database: "idb_site1_a", user: collector)
        await Self.allowed(idb, event)
        await Self.allowed(idb, "SELECT count(*) FROM idb.events")
        await Self.refused(idb, "UPDATE idb.events SET queue = 'x'")
        await Self.refused(idb, "DELETE FROM idb.events")
        await Self.refused(idb, "TRUNCATE idb.events")
        await Self.refused(idb, "DROP TABLE idb.events")
        await Self.refused(idb, "CREATE TABLE idb.mine (x int)")
        await Self.refused(idb, "INSERT INTO idb.fence (failed_site, epoch, declared_by) VALUES ('site2', 9, 'me')")
        await idb.close()
        await Self.cannotConnect(t, site: "site1", database: "idb_site2_b", user: collector)
        await Self.cannotConnect(t, site: "site1", database: "mart", user: collector)

        // The extractor: reads the IDBs, writes the star schema and its own progress; cannot
        // touch what collectors stored, nor the phase, the epoch, the journal or the retired set.
        let xIDB = try await Self.connect(t, site: "site2", database: "idb_site2_a", user: "bcpipe_extractor")
        await Self.allowed(xIDB, "SELECT count(*) FROM idb.events")
        await Self.allowed(xIDB, "SELECT count(*) FROM idb.fence")
        await Self.refused(xIDB, event)
        await Self.refused(xIDB, "DELETE FROM idb.events")
        await xIDB.close()
        let xMart = try await Self.connect(t, site: "site1", database: "mart", user: "bcpipe_extractor")
        await Self.allowed(xMart, "DELETE FROM mart.event")
        await Self.allowed(xMart, "UPDATE control.watermark SET last_ingest_id = last_ingest_id")
        await Self.allowed(xMart, "SELECT epoch FROM control.deployment FOR SHARE")
        await Self.refused(xMart, "UPDATE control.deployment SET epoch = epoch + 1")
        await Self.refused(xMart, "UPDATE control.deployment SET phase = 'emergency'")
        await Self.refused(xMart, "DELETE FROM control.journal")
        await Self.refused(xMart, "DELETE FROM control.retired")
        await Self.refused(xMart, "ALTER ROLE bcpipe_reporting IN DATABASE mart RESET default_transaction_read_only")
        await xMart.close()

        // Reporting: the report schema, read only; nothing of the mart's tables or control.
        let report = try await Self.connect(t, site: "site1", database: "mart", user: "bcpipe_reporting")
        await Self.allowed(report, "SELECT count(*) FROM report.interactions")
        await Self.allowed(report, "SELECT count(*) FROM report.queue_hourly")
        await Self.refused(report, "SELECT count(*) FROM mart.event")
        await Self.refused(report, "SELECT * FROM control.deployment")
        await Self.refused(report, "CREATE TABLE report.mine (x int)")
        await report.close()
        await Self.cannotConnect(t, site: "site1", database: "idb_site1_a", user: "bcpipe_reporting")

        // The coordinator (and the operators' procedures): the deployment's state, fences,
        // purges, slots, and a rebuilt mart's reload; subscriptions, the reporting role's setting
        // and the copy's indexes only through the owner's functions; no row of the mart or of an
        // IDB changed one by one, no DDL, the journal append-only.
        let coordinator = "bcpipe_coordinator"
        let cIDB = try await Self.connect(t, site: "site1", database: "idb_site1_a", user: coordinator)
        await Self.allowed(cIDB, "INSERT INTO idb.fence (failed_site, epoch, declared_by) VALUES ('site2', 9, 'me')")
        await Self.allowed(cIDB, "UPDATE idb.fence SET released_at = now()")
        await Self.allowed(cIDB, "DELETE FROM idb.events WHERE received_at < now() - interval '1 day'")
        await Self.refused(cIDB, event)
        await Self.refused(cIDB, "UPDATE idb.events SET queue = 'x'")
        await Self.refused(cIDB, "TRUNCATE idb.events")
        await Self.refused(cIDB, "UPDATE idb.source_checkpoint SET max_seq = 0")
        await Self.refused(cIDB, "DROP TABLE idb.fence")
        await cIDB.close()
        let cMart = try await Self.connect(t, site: "site2", database: "mart", user: coordinator)
        await Self.allowed(cMart, "UPDATE control.deployment SET epoch = epoch + 1, phase = 'disaster-recovery'")
        await Self.allowed(cMart, "INSERT INTO control.retired (kind, name, epoch) VALUES ('site', 'site1', 9)")
        await Self.allowed(
            cMart,
            "INSERT INTO control.journal (epoch, actor, procedure, step, status) VALUES (9, 'me', 'dr declare', 'fence', 'done')"
        )
        await Self.allowed(cMart, "TRUNCATE \(Replication.tables.joined(separator: ", "))")
        await Self.allowed(cMart, "SELECT control.set_reporting_read_only(true)")
        // Catches the open door of issue 15: the copy's index drop (mart.event's primary key
        // among them) outside a return to normal's copy.
        await Self.refusedWith(cMart, "SELECT control.drop_copy_indexes()", "55000", "not being rebuilt")
        await Self.refused(cMart, "SELECT control.drop_copy_indexes_unchecked()")
        await Self.allowed(
            cMart,
            "UPDATE control.deployment SET phase = 'return-to-normal'; SELECT control.drop_copy_indexes()",
            expectFailure: "does not hold the procedure lock")
        await Self.allowed(
            cMart,
            """
            UPDATE control.deployment SET phase = 'return-to-normal';
            SELECT pg_advisory_lock(hashtext('bcpipe procedure')); SELECT control.drop_copy_indexes();
            """)
        _ = try await cMart.query("SELECT pg_advisory_unlock_all()")
        #expect(
            try await cMart.query("SELECT count(*) FROM pg_indexes WHERE tablename = 'event' AND schemaname = 'mart'")[
                0
            ]
            .decode(0, as: Int.self) > 0, "the rolled-back drop left mart.event's indexes")
        // Catches the other: a subscription to a server of the caller's choosing, applied as the
        // owner. Only the sites db migrate recorded from the topology are publishers.
        await Self.refusedWith(
            cMart, "SELECT control.subscribe('bcpipe_evil', 'host=10.9.9.9 port=5432', 'bcpipe_evil', false)", "22023",
            "not a publisher this mart knows")
        await Self.refused(cMart, "INSERT INTO control.publisher (site, conninfo) VALUES ('evil', 'host=10.9.9.9')")
        await Self.refused(cMart, "UPDATE control.publisher SET conninfo = 'host=10.9.9.9'")
        #expect(
            try await cMart.query("SELECT site FROM control.publisher").map { $0[0]! } == ["site1"],
            "site2's mart knows site1 as its publisher")
        await Self.refused(cMart, "UPDATE mart.event SET queue = 'x'")
        await Self.refused(cMart, "DELETE FROM mart.fact_interaction")
        await Self.refused(cMart, "DELETE FROM control.journal")
        await Self.refused(cMart, "UPDATE control.journal SET actor = 'someone else'")
        await Self.refused(cMart, "DROP TABLE mart.event")
        await Self.refused(cMart, "CREATE TABLE mart.mine (x int)")
        await Self.refused(cMart, "SELECT * FROM control.copy_index")
        await Self.refused(cMart, "ALTER ROLE bcpipe_reporting IN DATABASE mart RESET default_transaction_read_only")
        await Self.refused(cMart, "ALTER ROLE bcpipe_coordinator SUPERUSER")
        await Self.refused(
            cMart,
            "CREATE SUBSCRIPTION mine CONNECTION 'host=127.0.0.1' PUBLICATION bcpipe_mart WITH (connect = false)")
        await Self.refused(cMart, "CREATE PUBLICATION mine FOR TABLE mart.event")
        // The functions take only what they are for.
        do {
            _ = try await cMart.query(
                "SELECT control.subscribe($1, 'site1', 'bcpipe_x', false)", ["bcpipe_x; DROP TABLE mart.event"]
            )
            Issue.record("control.subscribe took a name that is not a subscription name")
        } catch let e as PostgresError {
            #expect(e.sqlState == "22023" && e.message.contains("subscription and slot names"), "\(e)")
        }
        // Slots: made and dropped (not transactional: not rolled back).
        _ = try await cMart.query("SELECT pg_create_logical_replication_slot('bcpipe_role_test', 'pgoutput')")
        try await Replication.dropSlot(cMart, "bcpipe_role_test")
        await cMart.close()

        // The lab's processes log in as these roles.
        let owner = try await PostgresConnection.connect(
            PostgresConfiguration(conninfo: t.site(named: "site1")!.postgres, database: "postgres"))
        try await CollectorTests.waitUntil("the collectors and the extractor are connected", timeout: 60) {
            let users = Set(
                try await owner.query("SELECT usename FROM pg_stat_activity WHERE usename IS NOT NULL").map { $0[0]! })
            return users.isSuperset(of: [collector, "bcpipe_collector_idb_site2_b", "bcpipe_extractor", coordinator])
        }
        // The migration's publication carries exactly the tables the coordinator replicates,
        // truncates and copies (Replication.tables).
        let published = try await PostgresConnection.connect(
            PostgresConfiguration(conninfo: t.site(named: "site1")!.postgres, database: "mart"))
        let names = try await published.query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            [Replication.publication]
        ).map { $0[0]! }
        #expect(Set(names) == Set(Replication.tables), "\(names.sorted())")
        await published.close()
        // The standby's subscription, made by its coordinator through control.subscribe, reads
        // the active mart as the coordinator role too.
        try await CollectorTests.waitUntil("site2's mart follows site1's as bcpipe_coordinator", timeout: 60) {
            try await owner.query(
                "SELECT 1 FROM pg_stat_replication WHERE usename = $1 AND application_name = 'bcpipe_site2'",
                [coordinator]
            ).count == 1
        }
        await owner.close()
        try lab.down(remove: true)
    }
}
