import Control
import Foundation
import Logging
import PostgresClient
import Topology

/// `bcpipe idb purge`: deletes IDB rows that every active mart has extracted, and nothing while
/// a purge hold is set (return to normal sets one until the new site has caught up).
public struct IDBPurge: Sendable {
    public let topology: Topology
    public let logger: Logger

    public init(topology: Topology, logger: Logger) {
        self.topology = topology
        self.logger = logger
    }

    /// Parses `90s`, `30m`, `24h`, `7d` (or plain seconds) into seconds.
    public static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let n = Int(text), n >= 0 { return n }
        guard let unit = text.last.flatMap({ units[$0] }), let n = Int(text.dropLast()), n >= 0 else { return nil }
        return n * unit
    }

    public struct Result: Sendable {
        public var idb: String
        public var upToIngestID: Int64
        public var deleted: Int
        /// Why the IDB was skipped, if it was (unreachable).
        public var skipped: String?
    }

    func connect(_ conninfo: String, _ database: String) async throws -> PostgresConnection {
        var c = PostgresConfiguration(conninfo: conninfo, database: database)
        c.connectTimeout = 3
        c.operationTimeout = 60
        c.statementTimeoutMilliseconds = 50_000
        return try await PostgresConnection.connect(c, logger: logger)
    }

    /// Purges rows older than `olderThan` seconds that every active mart has extracted.
    ///
    /// #### Errors
    /// ``SafetyRefusal`` when an active mart cannot be reached (what it extracted is unknown) or
    /// holds an unreleased purge hold.
    /// `activeSites`: the marts that extract now (the control state's word after disaster
    /// recovery); the topology's active extractors when not given.
    public func run(olderThan: Int, dryRun: Bool, activeSites: [String]? = nil) async throws -> [Result] {
        var safe: [String: Int64] = [:]  // "site/db/source" → lowest extracted ingest id over active marts
        let active = activeSites ?? topology.extractors.filter { $0.role == .active }.map(\.site)
        var first = true
        for siteName in active {
            guard let site = topology.site(named: siteName) else { continue }
            let mart: PostgresConnection
            do {
                mart = try await connect(site.postgres, Topology.martDatabase)
            } catch {
                throw SafetyRefusal(
                    rule: "every-active-mart-reachable",
                    message:
                        "the active mart at \(siteName) cannot be reached (\(error)), so what it has extracted is unknown",
                    remedy: "restore the link to \(siteName) and try again")
            }
            if let h = try await ControlStore(mart).purgeHolds().first {
                await mart.close()
                throw SafetyRefusal(
                    rule: "no-purge-hold",
                    message: "the mart at \(siteName) holds IDB purges: \(h.reason) (set by \(h.setBy) at \(h.setAt))",
                    remedy: "finish return to normal (bcpipe rtn status), which releases the hold, then purge")
            }
            var mine: [String: Int64] = [:]
            for w in try await ControlStore(mart).watermarks() {
                mine["\(w.site)/\(w.database)/\(w.source)"] = w.lastIngestID
            }
            await mart.close()
            if first {
                safe = mine
                first = false
            } else {
                // A watermark one mart lacks means that mart extracted nothing from there yet.
                var merged: [String: Int64] = [:]
                for (k, v) in safe { if let w = mine[k] { merged[k] = min(v, w) } }
                safe = merged
            }
        }
        var results: [Result] = []
        for c in topology.collectors {
            let key = "\(c.idb.site)/\(c.idb.database)/\(c.source)"
            guard let upTo = safe[key], upTo > 0, let site = topology.site(named: c.idb.site) else {
                results.append(Result(idb: "\(c.idb.site)/\(c.idb.database)", upToIngestID: 0, deleted: 0))
                continue
            }
            let idb: PostgresConnection
            do {
                idb = try await connect(site.postgres, c.idb.database)
            } catch {
                results.append(
                    Result(
                        idb: "\(c.idb.site)/\(c.idb.database)", upToIngestID: upTo, deleted: 0,
                        skipped: "unreachable (\(error))"))
                continue
            }
            let sql =
                dryRun
                ? "SELECT count(*) FROM idb.events WHERE source = $1 AND ingest_id <= $2 AND received_at < now() - make_interval(secs => $3)"
                : "DELETE FROM idb.events WHERE source = $1 AND ingest_id <= $2 AND received_at < now() - make_interval(secs => $3)"
            let rows = try await idb.query(sql, [c.source, upTo, Double(olderThan)])
            await idb.close()
            results.append(
                Result(
                    idb: "\(c.idb.site)/\(c.idb.database)", upToIngestID: upTo,
                    deleted: dryRun ? try rows[0].decode(0, as: Int.self) : rows.affectedRows))
        }
        return results
    }
}
