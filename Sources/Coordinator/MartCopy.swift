import Control
import Foundation
import PostgresClient
import Topology

/// Return to normal's copy step: the reporting mart copied into the returning one without a gap.
struct MartCopy: Sendable {
    /// The returning mart's session (holding its procedure lock) and the reporting one's.
    var target: PostgresConnection
    var source: PostgresConnection
    var newSite: Topology.Site
    var activeSite: Topology.Site
    /// Active-standby: the returning mart follows the reporting one from the copy's slot.
    var follow: Bool
    var say: @Sendable (String) -> Void

    /// The gap-free copy: slot + exported snapshot on the reporting mart, each published table
    /// dumped from that snapshot into the returning mart, then replication from the slot.
    func run() async throws -> [String: String] {
        let site = newSite.name
        let slot = Replication.subscription(of: site)
        // Redone whole when interrupted: no subscription or slot of an earlier attempt survives.
        try await Replication.unsubscribe(target, slot)
        try await Replication.dropSlot(source, slot)
        try await Replication.ensurePublication(source)
        try await target.execute("TRUNCATE \(Replication.tables.joined(separator: ", "))")
        // Loaded without their indexes and keys, built once afterwards (as pg_restore does): a
        // bulk build is several times cheaper than maintaining them row by row. The definitions
        // are kept in the target (control.copy_index), so an interrupted copy rebuilds whatever
        // it had dropped.
        // Only a session holding the target's procedure lock may drop them (SQL/mart/008): this one.
        _ = try await target.query("SELECT control.drop_copy_indexes()")
        // Progress and time left by table size (bytes of heap): cheap to know, and what the copy costs.
        var sizes: [String: Double] = [:]
        for table in Replication.tables {
            sizes[table] = try await source.query(
                "SELECT COALESCE(sum(pg_relation_size(relid)), 0)::float8 FROM pg_partition_tree($1::regclass)", [table]
            )[0].decode(0, as: Double.self)
        }
        let totalBytes = max(1, sizes.values.reduce(0, +))

        // The replication connection exports the snapshot and must stay open while it is used.
        var config = PostgresConfiguration(conninfo: activeSite.postgres + " replication=database", database: "mart")
        config.connectTimeout = 5
        config.applicationName = "bcpipe rtn start"
        let replication = try await PostgresConnection.connect(config)
        let created = try await replication.execute("CREATE_REPLICATION_SLOT \(slot) LOGICAL pgoutput EXPORT_SNAPSHOT")
        guard let snapshot = created.first?[2] else {
            throw ControlError(.copyFailed, "the replication slot \(slot) did not export a snapshot")
        }
        say("    slot \(slot) at \(created.first?[1] ?? "?"), snapshot \(snapshot)")
        let started = Date()
        var copiedBytes = 0.0
        let bin = try PostgresTools.binDirectory(containing: "pg_dump")
        // pg_dump and psql log in as this procedure does.
        let role = source.configuration.user.map { " user=\(PostgresConfiguration.conninfoValue($0))" } ?? ""
        for (i, table) in Replication.tables.enumerated() {
            let t0 = Date()
            let out = try PostgresTools.shell(
                """
                set -o pipefail
                "$BIN/pg_dump" --dbname="$SRC" --snapshot="$SNAP" --data-only --no-owner --no-privileges --table="$TABLE" \
                  --load-via-partition-root \
                  | "$BIN/psql" -q -X -v ON_ERROR_STOP=1 --dbname="$DST"
                """,
                environment: [
                    "BIN": bin, "SRC": "\(activeSite.postgres) dbname=mart\(role)",
                    "DST": "\(newSite.postgres) dbname=mart\(role)",
                    // A partitioned table's rows are in its partitions: they are dumped too
                    // and loaded through the root, into the target's own partitions.
                    "SNAP": snapshot, "TABLE": Replication.partitioned.contains(table) ? table + "*" : table,
                ])
            guard out.status == 0 else {
                await replication.close()
                throw ControlError(.copyFailed, "copying \(table) failed: \(out.text)")
            }
            copiedBytes += sizes[table] ?? 0
            let elapsed = Date().timeIntervalSince(started)
            let left = copiedBytes > 0 ? elapsed / copiedBytes * (totalBytes - copiedBytes) : 0
            say(
                "    \(i + 1)/\(Replication.tables.count) \(table): \(String(format: "%.1f", (sizes[table] ?? 0) / 1_048_576)) MiB in \(Int(Date().timeIntervalSince(t0) * 1000)) ms — \(Int(copiedBytes * 100 / totalBytes))% of \(String(format: "%.1f", totalBytes / 1_048_576)) MiB, about \(Int(left.rounded())) s left"
            )
        }
        await replication.close()
        let built = Date()
        try await target.execute("SET maintenance_work_mem = '256MB'")
        let rebuilt = try await target.query("SELECT control.build_copy_indexes()")[0].decode(0, as: Int.self)
        say("    \(rebuilt) indexes and keys built in \(Int(Date().timeIntervalSince(built) * 1000)) ms")
        try await Replication.fixSequences(target)
        if !follow {
            // Its own extractor goes on from the copied watermarks; the slot is not needed.
            try await Replication.dropSlot(source, slot)
        } else {
            try await Replication.subscribe(
                target, site: site, publisher: source, publisherSite: activeSite.name, existingSlot: slot)
        }
        return ["slot": slot, "snapshot": snapshot, "seconds": "\(Int(Date().timeIntervalSince(started)))"]
    }
}
