import ArgumentParser
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
                activeSites: await ControlState.activeMartSites(topology))
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
