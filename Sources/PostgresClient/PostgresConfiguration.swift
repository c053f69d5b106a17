import Foundation

/// How to reach one PostgreSQL database, and the time limits that keep a dead link from hanging a process.
public struct PostgresConfiguration: Sendable {
    /// A libpq connection string or URI; passed through untouched, so multi-host lists,
    /// `target_session_attrs`, `sslmode` and `.pgpass` work as libpq documents them.
    public var conninfo: String
    /// The database to use, overriding any `dbname` in ``conninfo``.
    public var database: String?
    /// The role to log in as, overriding any `user` in ``conninfo`` (a component's own
    /// least-privilege role; its password comes from `.pgpass` or `PGPASSFILE` as usual).
    /// Defaults to ``environmentUser``: every bcpipe process logs in as `BCPIPE_DB_USER` when it
    /// is set (the collector's, extractor's or coordinator's role), else as the conninfo says.
    /// `nil` means the conninfo's role (migrations run as the owner).
    public var user: String? = Self.environmentUser
    /// Seconds libpq may spend establishing a connection (per host). Default 5.
    public var connectTimeout: Int = 5
    /// Server-side `statement_timeout` in milliseconds (0 disables). Default 60 s.
    public var statementTimeoutMilliseconds: Int = 60_000
    /// Client-side limit, seconds, on any wait for the server within one operation. When it expires
    /// the connection is closed and ``PostgresError/Code/timeout`` is thrown. Default: the
    /// statement timeout plus 10 s, so the server normally answers first.
    public var operationTimeout: Double?
    /// TCP keepalive idle seconds, probe interval and count: a silent peer is noticed in about
    /// idle + interval × count seconds. Defaults 5 + 2 × 3.
    public var keepalivesIdle: Int = 5
    public var keepalivesInterval: Int = 2
    public var keepalivesCount: Int = 3
    /// Milliseconds transmitted data may stay unacknowledged before the kernel drops the connection.
    public var tcpUserTimeoutMilliseconds: Int = 10_000
    /// Shown in `pg_stat_activity`.
    public var applicationName: String = "bcpipe"

    /// `BCPIPE_DB_USER`, when set and not empty.
    public static var environmentUser: String? {
        ProcessInfo.processInfo.environment["BCPIPE_DB_USER"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `value` quoted for a keyword/value conninfo (`user='…'`).
    public static func conninfoValue(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    public init(conninfo: String, database: String? = nil) {
        self.conninfo = conninfo
        self.database = database
    }

    /// The effective client-side deadline for one operation, seconds.
    public var effectiveOperationTimeout: Double {
        operationTimeout ?? (statementTimeoutMilliseconds > 0 ? Double(statementTimeoutMilliseconds) / 1000 + 10 : 3600)
    }

    /// Keyword/value pairs for `PQconnectdbParams` with `expand_dbname`: our defaults come first
    /// so anything in the conninfo overrides them; ``database`` comes last so it overrides the conninfo.
    var connectParameters: [(String, String)] {
        var p: [(String, String)] = [
            ("connect_timeout", String(connectTimeout)),
            ("keepalives", "1"),
            ("keepalives_idle", String(keepalivesIdle)),
            ("keepalives_interval", String(keepalivesInterval)),
            ("keepalives_count", String(keepalivesCount)),
            ("tcp_user_timeout", String(tcpUserTimeoutMilliseconds)),
            ("application_name", applicationName),
            ("dbname", conninfo),
        ]
        if let database { p.append(("dbname", database)) }
        if let user { p.append(("user", user)) }
        return p
    }

    /// `host:port/database` for messages, without credentials.
    public var targetDescription: String {
        var host = "?"
        var port = "5432"
        var db = database
        for part in conninfo.split(separator: " ") {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            switch kv[0] {
            case "host", "hostaddr": host = kv[1]
            case "port": port = kv[1]
            case "dbname": db = db ?? kv[1]
            default: break
            }
        }
        return "\(host):\(port)/\(db ?? "?")"
    }
}
