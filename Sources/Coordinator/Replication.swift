import Control
import Foundation
import PostgresClient
import Topology

/// Active-standby: the standby mart is a PostgreSQL logical-replication subscriber of the active
/// one (the role GoldenGate plays for Info Mart). The publication carries the mart and the
/// extraction state (watermarks, completeness, gaps, holds) so a promoted standby extracts on from
/// where the active stopped; each site keeps its own deployment row, procedures and journal.
public enum Replication {
    public static let publication = "bcpipe_mart"

    /// The tables published (`mart.dim_media` is static, written by the migration on every mart);
    /// SQL/mart/007_coordinator_role.sql creates the publication with the same list (RoleTests
    /// checks they agree).
    public static let tables = [
        "mart.event", "mart.dim_date", "mart.dim_queue", "mart.dim_agent", "mart.fact_interaction",
        "mart.fact_queue_offer", "mart.fact_agent_state", "mart.agg_queue_hourly", "mart.agg_agent_daily",
        "mart.interval_settings", "mart.agg_queue_interval", "mart.agg_agent_day", "mart.agg_agent_not_ready",
        "control.watermark", "control.source_state", "control.data_gaps", "control.extractor", "control.purge_hold",
    ]

    /// The tables partitioned by time (SQL/mart/014): their rows are in their partitions
    /// (`<table>_pYYYY_MM`, `<table>_default`), each mart's own.
    public static let partitioned = [
        "mart.event", "mart.fact_interaction", "mart.fact_queue_offer", "mart.fact_agent_state",
    ]

    /// Serial columns, whose sequences logical replication does not carry: set past the
    /// replicated rows when a subscriber becomes a writer.
    static let serials = [
        ("mart.dim_queue", "queue_key"), ("mart.dim_agent", "agent_key"), ("control.data_gaps", "id"),
        ("control.purge_hold", "id"),
    ]

    /// The subscription (and publisher slot) name of a subscriber site.
    public static func subscription(of site: String) -> String {
        "bcpipe_\(site.replacingOccurrences(of: "-", with: "_"))"
    }

    /// The publication is made by the mart's migrations (SQL/mart/007_coordinator_role.sql).
    public static func ensurePublication(_ publisher: PostgresConnection) async throws {
        let exists = try await publisher.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [publication])
        if exists.isEmpty {
            throw ControlError(
                .notMigrated,
                "\(publisher.configuration.targetDescription) has no publication \(publication): its mart's migrations have not all run; run bcpipe db migrate for that site"
            )
        }
    }

    public static func subscriptionExists(_ subscriber: PostgresConnection, site: String) async throws -> Bool {
        !(try await subscriber.query("SELECT 1 FROM pg_subscription WHERE subname = $1", [subscription(of: site)]))
            .isEmpty
    }

    /// Subscribes `subscriber` (the mart of `site`) to the publisher at `publisherConninfo`.
    /// `existingSlot`: a slot to start from (return to normal, `copy_data = false`); otherwise a
    /// fresh one is made on `publisher` (any stale one of that name dropped first) and, unless
    /// `copyData` is false (both marts hold the same rows already), the tables are copied first.
    /// Rows travel in binary (both marts have the same schema), and big transactions stream while
    /// they run rather than after their commit. The subscription itself is made by
    /// `control.subscribe` (a SECURITY DEFINER function: PostgreSQL 15 lets only a superuser
    /// create one), and connects to the publisher as the role logged in here.
    public static func subscribe(
        _ subscriber: PostgresConnection, site: String, publisher: PostgresConnection, publisherSite: String,
        existingSlot: String? = nil, copyData: Bool = true
    ) async throws {
        let name = subscription(of: site)
        let slot = existingSlot ?? name
        if existingSlot == nil {
            try await dropSlot(publisher, slot)
            try await publisher.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot])
        }
        try await subscriber.query(
            "SELECT control.subscribe($1, $2, $3, $4)",
            [name, publisherSite, slot, existingSlot == nil && copyData])
    }

    /// Drops the slot `slot` on `publisher` if it is there, waiting up to 15 s for the walsender
    /// of a subscription just dropped or disabled to let go of it.
    public static func dropSlot(_ publisher: PostgresConnection, _ slot: String) async throws {
        let deadline = Date().addingTimeInterval(15)
        while true {
            let rows = try await publisher.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [slot])
            guard let active = rows.first?[0] else { return }
            if active == "f" {
                do {
                    try await publisher.query("SELECT pg_drop_replication_slot($1)", [slot])
                    return
                } catch let e as PostgresError where e.sqlState == "55006" || e.sqlState == "42704" {
                    // Taken again in between (in use), or dropped by someone else: look again.
                }
            }
            guard Date() < deadline else {
                throw ControlError(
                    .busy,
                    "replication slot \(slot) on \(publisher.configuration.targetDescription) is still in use after 15 s; stop what uses it (see pg_stat_replication) and run this again"
                )
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Whether every table of the site's subscription has finished its initial copy. Until then
    /// the tables are synchronised each on its own (a watermark may be ahead of the events it
    /// covers), so a standby promoted then cannot trust what it holds.
    public static func isSynchronised(_ subscriber: PostgresConnection, site: String) async throws -> Bool {
        try await subscriber.query(
            """
            SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
            WHERE s.subname = $1 AND r.srsubstate NOT IN ('r', 's')
            """, [subscription(of: site)])[0].decode(0, as: Int.self) == 0
    }

    /// What a subscriber knows of its subscription: its name and how many of its tables have
    /// finished their initial copy (states `r` ready or `s` synchronised).
    public struct Following: Codable, Sendable, Equatable {
        public var subscription: String
        public var tables: Int
        public var synchronised: Int
        public var enabled: Bool
        public var description: String {
            let copy =
                synchronised == tables
                ? "all \(tables) tables synchronised"
                : "initial copy running, \(synchronised)/\(tables) tables synchronised"
            return "following via \(subscription): \(copy)\(enabled ? "" : ", DISABLED")"
        }
    }

    public static func following(_ subscriber: PostgresConnection) async throws -> [Following] {
        try await subscriber.query(
            """
            SELECT s.subname, count(r.srrelid)::int, (count(r.srrelid) FILTER (WHERE r.srsubstate IN ('r', 's')))::int, s.subenabled
            FROM pg_subscription s LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid
            WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            GROUP BY s.subname, s.subenabled ORDER BY 1
            """
        ).map {
            Following(
                subscription: try $0.decode(0, as: String.self), tables: try $0.decode(1, as: Int.self),
                synchronised: try $0.decode(2, as: Int.self), enabled: try $0.decode(3, as: Bool.self))
        }
    }

    /// Detaches a subscriber whose publisher is gone (disaster recovery): the subscription is
    /// dropped without touching the publisher's slot.
    public static func detach(_ subscriber: PostgresConnection, site: String) async throws {
        try await unsubscribe(subscriber, subscription(of: site))
    }

    /// Drops the subscription `name` of a subscriber (through `control.unsubscribe`), leaving its
    /// slot on the publisher.
    public static func unsubscribe(_ subscriber: PostgresConnection, _ name: String) async throws {
        try await subscriber.query("SELECT control.unsubscribe($1)", [name])
    }

    /// Moves every serial sequence past the rows replication brought in.
    public static func fixSequences(_ mart: PostgresConnection) async throws {
        for (table, column) in serials {
            try await mart.query(
                """
                SELECT setval(pg_get_serial_sequence('\(table)', '\(column)'),
                              COALESCE((SELECT max(\(column)) FROM \(table)), 0) + 1, false)
                """)
        }
    }

    /// What a publisher knows of its subscribers: name, state, replay lag (s) and bytes behind.
    public struct SubscriberLag: Codable, Sendable, Equatable {
        public var subscription: String
        public var state: String
        public var replayLagSeconds: Double?
        public var bytesBehind: Int64?
    }

    public static func lags(_ publisher: PostgresConnection) async throws -> [SubscriberLag] {
        try await publisher.query(
            """
            SELECT s.slot_name, COALESCE(r.state, CASE WHEN s.active THEN 'active' ELSE 'disconnected' END),
                   extract(epoch FROM r.replay_lag)::float8,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint
            FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
            WHERE s.slot_name LIKE 'bcpipe\\_%' ORDER BY 1
            """
        ).map {
            SubscriberLag(
                subscription: try $0.decode(0, as: String.self), state: try $0.decode(1, as: String.self),
                replayLagSeconds: try $0.decode(2, as: Double?.self), bytesBehind: try $0.decode(3, as: Int64?.self))
        }
    }
}
