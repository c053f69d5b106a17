import ArgumentParser
import Demo
import Foundation
import Lab
import Logging

extension BCPipe {
    /// `bcpipe chaos`: CONTRACT 6.1 under faults — the lab under live traffic while a seeded
    /// schedule injects faults, then the ledger from the real databases.
    struct Chaos: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the lab under traffic and seeded random faults, then account for every event.",
            discussion: """
                Faults: WAN refuse and blackhole cuts shorter and longer than the stuck threshold, link \
                flaps, SIGKILL of collectors, extractors and coordinators, PostgreSQL immediate restarts, \
                a collector's disk filling up (as root: its queue on a small tmpfs), a flipped byte in a \
                queue segment, a site failure with dr declare and return to normal. Every kind happens at \
                least once; more follow while --seconds lasts. Then the faults stop, the pipeline settles, \
                and the ledger is printed: acknowledged, in every IDB, in every mart, lost, miscounted \
                (report rows that differ from a recount of the events), unexpected. Exit 0 only with lost, \
                miscounted and unexpected all zero. The same seed plays \
                the same schedule.
                """)
        @Option(help: "How long the faults go on, seconds (at least one of each kind is played).")
        var seconds: Double = 120
        @Option(help: "Seed of the fault schedule and the traffic (default: drawn, and printed).") var seed: UInt64?
        @Option(name: .customLong("stuck-threshold"), help: "The lab's extract-data-stuck-threshold, seconds.")
        var stuckThreshold = 10
        @Flag(help: "Leave the lab running afterwards.") var keep = false
        @Option(help: "Lab directory (default: a new temporary directory, removed afterwards).") var dir: String?
        @Option(name: .customLong("base-port"), help: "First port of the lab's range of 100.") var basePort: Int =
            25_400

        func validate() throws {
            guard seconds > 0 else { throw ValidationError("--seconds must be above 0") }
            guard stuckThreshold >= 5 else {
                throw ValidationError("--stuck-threshold must be at least 5 s (the WAN faults are scaled to it)")
            }
        }

        func run() async throws {
            let directory =
                dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("bcpipe-chaos-\(getpid())").path
            // Its operator's procedures (dr declare, rtn start) log in as an operator's would:
            // as the coordinator role, not the owner (the lab still migrates as the owner).
            setenv("BCPIPE_DB_USER", "bcpipe_coordinator", 0)
            var logger = Logger(label: "bcpipe.chaos")
            logger.logLevel = .warning
            let lab = LocalLab(directory: directory, executable: currentExecutable(), logger: logger)
            var options = LocalLab.Options()
            options.basePort = basePort
            options.mode = .activeStandby
            options.stuckThreshold = stuckThreshold
            options.lateData = .backfill
            // A free-disk reserve the disk-full fault can cross on the collector's own small disk.
            options.collectorEnvironment = ["BCPIPE_QUEUE_RESERVE_BYTES": "\(1 << 20)"]
            let seed = seed ?? UInt64.random(in: 1...999_999)
            let chaos = ChaosRun(lab: lab, options: options, seconds: seconds, seed: seed, say: Demo.say)
            let ledger: ChaosRun.Ledger
            do {
                ledger = try await chaos.run()
            } catch {
                Demo.say("chaos: \(error)")
                Demo.say("chaos: the lab is left in \(directory) for a look (bcpipe lab down --dir \(directory))")
                throw ExitCode(1)
            }
            let r = ledger.reconciliation
            Demo.say("")
            Demo.say("== ledger (seed \(seed); through \(r.cutoff))")
            Demo.say("   acknowledged           \(ledger.acknowledged)")
            for (name, n) in ledger.idbs {
                Demo.say("   in IDB \(name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(n)")
            }
            for (name, n) in ledger.marts {
                Demo.say("   in mart \(name.padding(toLength: 21, withPad: " ", startingAt: 0)) \(n)")
            }
            Demo.say("   reporting mart         \(r.mart): \(r.line)")
            Demo.say("   lost                   \(r.lost)")
            Demo.say(
                "   miscounted             \(r.miscounted.total) (queue_hourly \(r.miscounted.queueHourly), agent_daily \(r.miscounted.agentDaily), interactions \(r.miscounted.interactions) rows differ from a recount of the events)"
            )
            Demo.say("   unexpected             \(r.unexpected)")
            Demo.say(
                "   collector answers      503 (back-pressure) \(ledger.backPressure) · other errors \(ledger.errorAnswers) · unanswered attempts \(ledger.unanswered) (retried; a batch counts once one collector of its pair says 200)"
            )
            Demo.say("   counted by the queues  \(ledger.countedByQueues) (damaged frames, reported, not silent)")
            Demo.say(
                "   declared during cuts   \(ledger.declaredDuringCuts) tried, \(ledger.promotedDuringCuts) promoted (the witness must stop every one)"
            )
            if r.lostWithFailedSite > 0 {
                Demo.say(
                    "   with the failed site   \(r.lostWithFailedSite) (acknowledged only by its collectors; CONTRACT 6.1)"
                )
            }
            Demo.say(
                ledger.passed
                    ? "== PASS" : "== FAIL: lost, miscounted, unexpected and promoted during cuts must all be 0")
            if keep {
                Demo.say(
                    "== the lab keeps running: bcpipe status --config \(lab.topologyPath); bcpipe lab down --dir \(directory)"
                )
            } else {
                try lab.down()
                chaos.cleanUp()
                if dir == nil { try? FileManager.default.removeItem(atPath: directory) }
            }
            if !ledger.passed { throw ExitCode(1) }
        }
    }
}
