import Foundation
import Lab
import PostgresClient
import Testing

@Suite("PostgreSQL client against a real server", .serialized)
struct PostgresClientTests {
    func scratch() async throws -> PostgresConnection {
        let lab = try await TestLab.shared.get()
        return try await TestLab.connect(lab, site: "site1", database: "mart")
    }

    @Test func queriesDecodeTypedValues() async throws {
        let conn = try await scratch()
        let rows = try await conn.query(
            "SELECT $1::bigint AS big, $2::text AS s, NULL::text AS n, $3::timestamptz AS t, true AS b, 2.5::float8 AS d, $4::int AS i",
            [Int64.max, "it's \"quoted\"\t\n日本", "2026-11-21T10:00:00.123Z", 42])
        #expect(rows.count == 1)
        #expect(rows.columns == ["big", "s", "n", "t", "b", "d", "i"])
        let row = rows[0]
        #expect(try row.decode("big", as: Int64.self) == Int64.max)
        #expect(try row.decode("s", as: String.self) == "it's \"quoted\"\t\n日本")
        #expect(try row.decode("n", as: String?.self) == nil)
        #expect(try row.decode("t", as: PostgresTimestamp.self).millisecondsSinceEpoch == 1_795_255_200_123)
        #expect(try row.decode("b", as: Bool.self))
        #expect(try row.decode("d", as: Double.self) == 2.5)
        #expect(try row.decode("i", as: Int.self) == 42)
        #expect(throws: PostgresError.self) { try row.decode("n", as: String.self) }
        #expect(throws: PostgresError.self) { try row.decode("s", as: Int.self) }
        await conn.close()
    }

    @Test func valuesAreBoundNeverSpliced() async throws {
        let conn = try await scratch()
        try await conn.query("CREATE TEMP TABLE t (v text)")
        let nasty = "x'); DROP TABLE control.journal; --"
        try await conn.query("INSERT INTO t VALUES ($1)", [nasty])
        #expect(try await conn.query("SELECT v FROM t")[0].decode(0, as: String.self) == nasty)
        #expect(
            try await conn.query("SELECT count(*) FROM control.journal").count == 1, "the journal table still exists")
        await conn.close()
    }

    @Test func serverErrorsCarrySQLStateAndTheConnectionStaysUsable() async throws {
        let conn = try await scratch()
        do {
            try await conn.query("SELECT * FROM no_such_table")
            Issue.record("must fail")
        } catch let e as PostgresError {
            #expect(e.code == .server)
            #expect(e.sqlState == "42P01")
            #expect(e.message.contains("no_such_table"))
            #expect(!e.isConnectionProblem)
            #expect(e.description.contains("127.0.0.1:"))
        }
        do {
            try await conn.query("SELEC 1")
            Issue.record("must fail")
        } catch let e as PostgresError {
            #expect(e.sqlState == "42601")
        }
        try await conn.query("CREATE TEMP TABLE u (k int PRIMARY KEY)")
        try await conn.query("INSERT INTO u VALUES (1)")
        do {
            try await conn.query("INSERT INTO u VALUES (1)")
            Issue.record("must fail")
        } catch let e as PostgresError {
            #expect(e.sqlState == "23505")
            #expect(e.detail?.contains("(k)=(1)") == true)
        }
        #expect(try await conn.query("SELECT 1")[0].decode(0, as: Int.self) == 1)
        await conn.close()
    }

    @Test func connectionErrorsNeverShowThePassword() async throws {
        var config = PostgresConfiguration(
            conninfo: "host=127.0.0.1 port=1 user=bcpipe password=hunter2", database: "mart")
        config.connectTimeout = 2
        do {
            _ = try await PostgresConnection.connect(config)
            Issue.record("port 1 must refuse")
        } catch let e as PostgresError {
            #expect(e.code == .connectionFailed)
            #expect(e.isConnectionProblem)
            #expect(!e.description.contains("hunter2"))
        }
        #expect(
            PostgresError(code: .server, message: "bad conninfo password=hunter2 host=x").description.contains(
                "hunter2") == false)
    }

    @Test func transactionsCommitAndRollBack() async throws {
        let conn = try await scratch()
        try await conn.query("CREATE TEMP TABLE tx (v int)")
        try await conn.transaction { c in
            try await c.query("INSERT INTO tx VALUES (1)")
        }
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await conn.transaction { c in
                try await c.query("INSERT INTO tx VALUES (2)")
                throw Boom()
            }
        }
        #expect(try await conn.query("SELECT array_agg(v)::text FROM tx")[0].decode(0, as: String.self) == "{1}")
        await conn.close()
    }

    @Test func copyStreamsRowsWithEveryEscape() async throws {
        let conn = try await scratch()
        try await conn.query("CREATE TEMP TABLE c (id bigint, s text, n text)")
        let count = 50_000
        let copied = try await conn.transaction { c in
            try c.copyIn("COPY c (id, s, n) FROM STDIN") { sink in
                var row = CopyRow()
                for i in 0..<count {
                    row.reset()
                    row.append(Int64(i))
                    row.append("tab\there\nnew\\line \(i) é")
                    row.append(i % 2 == 0 ? nil : "x")
                    row.end()
                    try sink.write(row)
                }
            }
        }
        #expect(copied == count)
        let rows = try await conn.query("SELECT count(*), count(n), max(id) FROM c")
        #expect(try rows[0].decode(0, as: Int.self) == count)
        #expect(try rows[0].decode(1, as: Int.self) == count / 2)
        #expect(try rows[0].decode(2, as: Int.self) == count - 1)
        #expect(
            try await conn.query("SELECT s FROM c WHERE id = 7")[0].decode(0, as: String.self)
                == "tab\there\nnew\\line 7 é")
        await conn.close()
    }

    @Test func aFailedCopyWritesNothingAndLeavesTheConnectionUsable() async throws {
        let conn = try await scratch()
        try await conn.query("CREATE TEMP TABLE cf (id bigint)")
        do {
            try await conn.transaction { c in
                try c.copyIn("COPY cf FROM STDIN") { sink in
                    try sink.write(Array("1\n2\nnot-a-number\n".utf8))
                }
            }
            Issue.record("must fail")
        } catch let e as PostgresError {
            #expect(e.sqlState == "22P02")
        }
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await conn.transaction { c in
                try c.copyIn("COPY cf FROM STDIN") { sink in
                    try sink.write(Array("1\n".utf8))
                    throw Abort()
                }
            }
        }
        #expect(try await conn.query("SELECT count(*) FROM cf")[0].decode(0, as: Int.self) == 0)
        await conn.close()
    }

    @Test func listenAndNotify() async throws {
        let listener = try await scratch()
        let sender = try await scratch()
        try await listener.listen("idb_events")
        #expect(try await listener.notifications(timeout: 0.2).isEmpty)
        try await sender.notify("idb_events", payload: "site1/voice")
        let got = try await listener.notifications(timeout: 5)
        #expect(got.map(\.payload) == ["site1/voice"])
        #expect(got.first?.channel == "idb_events")
        await listener.close()
        await sender.close()
    }

    @Test func cancellingATaskCancelsTheQuery() async throws {
        let conn = try await scratch()
        let started = Date()
        let marker = "cancel-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let task = Task { try await conn.query("SELECT pg_sleep(30) /* \(marker) */") }
        // Cancel once the server runs the query (catches a cancel that only works before it is sent).
        let observer = try await scratch()
        try await CollectorTests.waitUntil("the server runs the query", timeout: 10) {
            try await observer.query(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
                [marker]
            ).count == 1
        }
        await observer.close()
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("must be cancelled")
        } catch let e as PostgresError {
            #expect(e.code == .cancelled)
        }
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(try await conn.query("SELECT 1").count == 1, "the server stopped the query; the connection is reusable")
        await conn.close()
    }

    @Test func statementTimeoutIsSetByDefault() async throws {
        let lab = try await TestLab.shared.get()
        let conn = try await TestLab.connect(lab, site: "site1", database: "mart") {
            $0.statementTimeoutMilliseconds = 300
        }
        #expect(try await conn.query("SHOW statement_timeout")[0].decode(0, as: String.self) == "300ms")
        do {
            try await conn.query("SELECT pg_sleep(5)")
            Issue.record("must time out")
        } catch let e as PostgresError {
            #expect(e.sqlState == "57014")
        }
        #expect(try await conn.query("SHOW TimeZone")[0].decode(0, as: String.self) == "UTC")
        await conn.close()
    }

    @Test func multiHostConninfoPassesThroughToLibpq() async throws {
        let lab = try await TestLab.shared.get()
        let state = try lab.requireState()
        let port = state.postgresPort(state.sites[0])
        // The first host refuses; libpq moves on to the second, which is writable.
        var config = PostgresConfiguration(
            conninfo: "host=127.0.0.1,127.0.0.1 port=1,\(port) user=bcpipe target_session_attrs=read-write",
            database: "mart")
        config.connectTimeout = 2
        let conn = try await PostgresConnection.connect(config)
        #expect(try await conn.query("SELECT inet_server_port()")[0].decode(0, as: Int.self) == port)
        await conn.close()
    }
}
