import ArgumentParser
import Control
import Coordinator
import Extractor
import Foundation
import Topology

extension BCPipe {
    /// `bcpipe idb purge`
    struct IDBCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "idb", abstract: "Interaction Databases.", subcommands: [Purge.self])
    }
}

extension BCPipe.IDBCommand {
    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete IDB rows every active mart has extracted (refused while a purge hold is set).")
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(name: .customLong("older-than"), help: "Only rows received longer ago than this: 90s, 30m, 24h, 7d.")
        var olderThan: String
        @Flag(name: .customLong("dry-run"), help: "Count what would be deleted.") var dryRun = false

        func validate() throws {
            guard IDBPurge.seconds(olderThan) != nil else {
                throw ValidationError("--older-than must be a duration like 90s, 30m, 24h or 7d (got \"\(olderThan)\")")
            }
        }

        func run() async throws {
            let topology = try topologyOptions.load()
            let results = try await IDBPurge(topology: topology, logger: .cli).run(
                olderThan: IDBPurge.seconds(olderThan)!, dryRun: dryRun,
                activeSites: await ControlStore.activeMartSites(topology))
            for r in results {
                if let skipped = r.skipped {
                    print("\(r.idb): skipped, \(skipped); purge it again once it is back")
                    continue
                }
                print(
                    "\(r.idb): \(dryRun ? "would delete" : "deleted") \(r.deleted) rows (extracted by every active mart up to ingest id \(r.upToIngestID))"
                )
            }
        }
    }
}

extension BCPipe {
    /// `bcpipe mart purge`
    struct MartCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mart", abstract: "The reporting marts.", subcommands: [Purge.self])
    }
}

extension BCPipe.MartCommand {
    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Drop the partitions older than retention.mart_days from every mart (refused under a purge hold or during a return to normal).",
            discussion: """
                Events and facts leave whole monthly partitions at a time; aggregates, dimensions, data gaps and the \
                journal stay. Every mart's rules are checked before anything is dropped. Extractors do the same daily.
                """)
        @OptionGroup var topologyOptions: TopologyOptions
        @Flag(name: .customLong("dry-run"), help: "Say what would be dropped, drop nothing.") var dryRun = false

        func run() async throws {
            let topology = try topologyOptions.load()
            let results = try await MartRetention.purgeAll(topology: topology, dryRun: dryRun, logger: .cli)
            var unreachable = false
            for r in results {
                if let error = r.error {
                    unreachable = true
                    print("\(r.site)/mart: not purged, it does not answer (\(error)); purge again once it is back")
                    continue
                }
                if r.dropped.isEmpty {
                    print("\(r.site)/mart: nothing older than \(topology.retention.martDays ?? 0) days to drop")
                }
                for d in r.dropped {
                    print(
                        "\(r.site)/mart: \(dryRun ? "would drop" : "dropped") \(d.partition) (rows before \(d.upperBound)\(d.rowEstimate >= 0 ? ", about \(d.rowEstimate) rows" : ""))"
                    )
                }
            }
            if unreachable { throw ExitCode(1) }
        }
    }
}
