import Foundation
import Logging
import PostgresClient
import Topology

/// Retention of a mart (CONTRACT 5.1): the monthly partitions of the event layer and the facts
/// made ahead of the data, and those older than `retention.mart_days` dropped whole. The rules
/// (purge hold, return to normal) are the mart's own, in `control.purge_partitions` (SQL/mart/014),
/// so the command line and every extractor keep them alike.
public struct MartRetention: Sendable {
    /// Months of partitions kept made ahead of now.
    public static let monthsAhead = 3

    /// A partition dropped (or, in a dry run, that would be).
    public struct Dropped: Sendable, Equatable {
        public var partition: String
        public var upperBound: String
        public var rowEstimate: Int64
    }

    /// Makes the partitions from last month through ``monthsAhead`` months from now that are
    /// missing; returns how many it made.
    @discardableResult
    public static func ensurePartitions(_ mart: PostgresConnection) async throws -> Int {
        try await mart.query(
            "SELECT control.ensure_partitions(now() - interval '1 month', now() + make_interval(months => $1))",
            [monthsAhead]
        )[0].decode(0, as: Int.self)
    }

    /// Drops the partitions whose rows are all older than `martDays` days (none when `dryRun`).
    ///
    /// #### Errors
    /// ``SafetyRefusal`` under a purge hold or during a return to normal (the mart says which).
    public static func purge(_ mart: PostgresConnection, martDays: Int, dryRun: Bool) async throws -> [Dropped] {
        do {
            return try await mart.query(
                """
                SELECT partition_name, to_char(upper_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), row_estimate
                FROM control.purge_partitions(now() - make_interval(days => $1), $2)
                """, [martDays, dryRun]
            ).map {
                Dropped(
                    partition: $0[0] ?? "", upperBound: $0[1] ?? "", rowEstimate: try $0.decode(2, as: Int64.self))
            }
        } catch let e as PostgresError where e.sqlState == "55000" {
            throw SafetyRefusal(
                rule: e.message.contains("purge hold") ? "no-purge-hold" : "no-return-to-normal",
                message: "\(mart.configuration.targetDescription) refuses the purge: \(e.message)",
                remedy: e.message.contains("purge hold")
                    ? "finish the procedure that set the hold (bcpipe rtn status), which releases it, then purge"
                    : "purge after rtn start has finished (bcpipe rtn status)")
        }
    }

    /// What `bcpipe mart purge` did at one site's mart.
    public struct SiteResult: Sendable {
        public var site: String
        public var dropped: [Dropped] = []
        /// Why this mart was not purged (it did not answer).
        public var error: String?
    }

    /// `bcpipe mart purge`: every mart of the topology, each by its own rules. The rules are
    /// checked at every mart that answers before any partition is dropped; a mart that does not
    /// answer is reported.
    public static func purgeAll(topology: Topology, dryRun: Bool, logger: Logger) async throws -> [SiteResult] {
        guard let days = topology.retention.martDays else {
            throw TopologyError(
                path: "retention.mart_days", message: "is not set: the marts keep everything; set it to purge")
        }
        func each(_ dry: Bool) async throws -> [SiteResult] {
            var out: [SiteResult] = []
            for site in topology.sites {
                var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
                config.connectTimeout = 5
                config.statementTimeoutMilliseconds = 120_000
                let mart: PostgresConnection
                do {
                    mart = try await PostgresConnection.connect(config, logger: logger)
                } catch {
                    out.append(SiteResult(site: site.name, error: "\(error)"))
                    continue
                }
                let dropped = try await mart.closing { try await purge($0, martDays: days, dryRun: dry) }
                out.append(SiteResult(site: site.name, dropped: dropped))
            }
            return out
        }
        let checked = try await each(true)
        return dryRun ? checked : try await each(false)
    }
}
