import ArgumentParser
import Control
import Coordinator
import Demo
import Foundation
import Lab
import Logging
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe demo`: the main job — the business-continuity story of CONTRACT 7 on a local
    /// two-site lab with live traffic, each act reconciled against the real databases.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Play the business-continuity story on a local two-site lab (removes it unless --keep).",
            discussion: """
                Normal operation; a WAN outage shorter than the stuck threshold; one longer (the gap, then \
                the backfill); a site failure and dr declare; emergency operation; rtn start with a \
                replacement site; normal again. Each act ends with a reconciliation from the databases \
                (events sent, in the reporting mart, lost, miscounted report rows, unexpected, known gaps); the demo \
                exits 1 if any act did not do what it promises. Writes an HTML report of the run.
                """)
        @Flag(help: "Leave the lab running afterwards.") var keep = false
        @Option(help: "Lab directory (default: a new temporary directory).") var dir: String?
        @Option(name: .customLong("base-port"), help: "First port of the lab's range of 100.") var basePort: Int =
            25_400
        @Option(help: "Where to write the HTML report of the run.") var report = "bcpipe-demo-report.html"
        @Option(name: .customLong("act-seconds"), help: "Length of the quiet acts (normal operation), seconds.")
        var actSeconds: Double = 20

        func run() async throws {
            let directory =
                dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("bcpipe-demo-\(getpid())").path
            // Its operator's procedures (dr declare, rtn start) log in as an operator's would:
            // as the coordinator role, not the owner (the lab still migrates as the owner).
            setenv("BCPIPE_DB_USER", "bcpipe_coordinator", 0)
            var logger = Logger(label: "bcpipe.demo")
            logger.logLevel = .warning
            let lab = LocalLab(directory: directory, executable: currentExecutable(), logger: logger)
            var options = LocalLab.Options()
            options.basePort = basePort
            options.mode = .activeStandby
            options.stuckThreshold = 20
            options.lateData = .backfill
            var story = DemoStory(lab: lab, options: options, say: Self.say)
            story.normalSeconds = actSeconds
            let result: DemoStory.Result
            do {
                result = try await story.run()
                try await Self.printQueueHourly(lab)
            } catch {
                if !keep { try? lab.down(remove: dir == nil) }
                throw error
            }
            try OutputFile.write(result.html(), to: report, what: "a writable path for --report")
            Self.say("")
            Self.say(
                "== \(result.acts.filter(\.ok).count) of \(result.acts.count) acts as promised, in \(Int(result.seconds)) s; report: \(report)"
            )
            if keep {
                Self.say(
                    "== the lab keeps running: bcpipe status --config \(lab.topologyPath); bcpipe lab down --dir \(directory)"
                )
            } else {
                try lab.down(remove: dir == nil)
                Self.say("== lab stopped; no process left")
            }
            if !result.ok { throw ExitCode(1) }
        }

        /// Each line as it happens, unbuffered also through a pipe or into a file.
        static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

        /// The closing report: queue-hourly (UTC), and today's 15-minute intervals in the
        /// topology's second zone (CONTRACT 5.1) when it keeps one.
        static func printQueueHourly(_ lab: LocalLab) async throws {
            let topology = try Topology.load(path: lab.topologyPath)
            guard let site = await ControlStore.reportingSite(topology) else { return }
            let zone = topology.reporting.timeZones.last ?? "UTC"
            let (hourly, intervals) = try await PostgresConnection.with(
                PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            ) { conn in
                let hourly = try await conn.query("SELECT * FROM report.queue_hourly ORDER BY hour, queue, media")
                _ = try await conn.query("SELECT set_config('TimeZone', $1, false)", [zone])
                let intervals = try await conn.query(
                    """
                    SELECT period_start, queue, media, offered, answered, abandoned, abandoned_short,
                           answered_within_sla, avg_wait_ms, max_wait_ms, avg_talk_ms
                    FROM report.queue_intervals WHERE time_zone = $1 AND level = 'sub_hour'
                      AND period_start >= date_trunc('day', now(), $1) ORDER BY period_start, queue, media
                    """, [zone])
                return (hourly, intervals)
            }
            Self.say("")
            Self.say("== report queue-hourly (\(site.name)/mart)")
            Self.say(BCPipe.Report.render(hourly, .table))
            Self.say("")
            Self.say(
                "== report queue-intervals --level sub_hour --tz \(zone) (today's \(topology.reporting.subHourMinutes)-minute intervals)"
            )
            Self.say(BCPipe.Report.render(intervals, .table))
        }
    }
}
