import ArgumentParser
import Control
import Coordinator
import Foundation
import Logging
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe coordinator run`
    struct CoordinatorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "coordinator", abstract: "The site's coordinator (phase, epoch, fencing, status).",
            subcommands: [Run.self])
    }

    /// `bcpipe dr declare`
    struct DR: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dr", abstract: "Disaster recovery (CONTRACT 6.4).", subcommands: [Declare.self])
    }
}

extension BCPipe.CoordinatorCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the coordinator of a site: serves /healthz and /v1/status at the site's coordinator address."
        )
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site this coordinator runs for.") var site: String
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            var logger = Logger(label: "bcpipe.coordinator.\(site)")
            logger[metadataKey: "site"] = "\(site)"
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            let server = try CoordinatorServer(
                topology: topology, site: site, token: AccessToken.fromEnvironment("BCPIPE_COORDINATOR_TOKEN"),
                logger: logger)
            logger.info("coordinator starting", metadata: ["site": "\(site)", "listen": "\(server.site.coordinator)"])
            try await server.run(onReady: SystemdNotify().ready)
        }
    }
}

extension BCPipe.DR {
    struct Declare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Declare a site failed and recover onto the surviving site; resumable, each step journaled.",
            discussion: """
                Refused (exit 3) without --confirm-site-down, and while the failed site's PostgreSQL server or \
                coordinator still answers from here or from any witness of the topology (that is a network \
                partition, not a site failure). With witnesses configured it is also refused while none of them \
                answers, unless --without-witness is given. Run it with the topology file of the surviving site \
                (or an observer's that reaches every server); BCPIPE_COORDINATOR_TOKEN is sent to the witnesses.
                """)
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site that failed.") var failedSite: String
        @Flag(help: "Confirm that the failed site is down, not merely unreachable.") var confirmSiteDown = false
        @Flag(help: "Check the safety rules and print the steps without changing anything.") var dryRun = false
        @OptionGroup var logging: LoggingOptions
        @Flag(
            help:
                "Go on when the topology's witnesses are configured but none answers (on your word that the site is down; journaled)."
        ) var withoutWitness = false

        func run() async throws {
            let topology = try topologyOptions.load()
            let dr = DisasterRecovery(
                topology: topology, failedSite: failedSite, confirmSiteDown: confirmSiteDown, dryRun: dryRun,
                withoutWitness: withoutWitness, token: AccessToken.fromEnvironment("BCPIPE_COORDINATOR_TOKEN"),
                actor: operatorIdentity(), failpoint: ProcessInfo.processInfo.environment["BCPIPE_FAILPOINT"],
                // Each step as it happens, unbuffered even through a pipe or a file.
                say: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) })
            _ = try await dr.run()
        }
    }
}

extension BCPipe {
    /// `bcpipe switchover --to SITE`
    struct Switchover: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "switchover",
            abstract:
                "Planned switch-over in normal operation: the reporting mart (and, active-standby, the writer) moves to SITE.",
            discussion: """
                Active-standby: the active mart stops writing, the standby (which must follow it already) \
                catches up, becomes the active one, and the old active follows it. Active-active: the \
                reporting mart moves. Under a new epoch; journaled and resumable like dr declare. Refused \
                (exit 3) outside phase normal or while the standby's initial copy runs.
                """)
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site whose mart reports (and, active-standby, is written) afterwards.") var to: String
        @Flag(help: "Check the rules and print the steps without changing anything.") var dryRun = false
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            let switchOver = SwitchOver(
                topology: topology, to: to, dryRun: dryRun, actor: operatorIdentity(),
                say: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) })
            _ = try await switchOver.run()
        }
    }
}

extension BCPipe {
    /// `bcpipe rtn start | status`
    struct RTN: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rtn", abstract: "Return to normal operation (CONTRACT 6.5).",
            subcommands: [Start.self, StatusCommand.self])
    }
}

extension BCPipe.RTN {
    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring a recovered or replacement site back into service; resumable, each step journaled.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The recovered or replacement site.") var site: String
        @Option(help: "The site whose mart reports after return to normal (now: the survivor).") var active: String
        @Flag(help: "Check the rules and print the steps without changing anything.") var dryRun = false
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            let rtn = ReturnToNormal(
                topology: topology, site: site, active: active, dryRun: dryRun, actor: operatorIdentity(),
                failpoint: ProcessInfo.processInfo.environment["BCPIPE_FAILPOINT"],
                say: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) })
            _ = try await rtn.run()
        }
    }

    struct StatusCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "The last return to normal: its steps, journal and replication.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Flag(help: "Print one JSON document.") var json = false

        struct Report: Codable {
            var site: String
            var control: ControlState
            var replication: [Replication.SubscriberLag]
        }

        func run() async throws {
            let topology = try topologyOptions.load()
            var best: Report?
            for site in topology.sites {
                var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
                config.connectTimeout = 3
                guard let c = try? await PostgresConnection.connect(config) else { continue }
                // The mart that journaled the latest return to normal (after a switch-over that is
                // the old active, now the standby), else the highest-epoch one.
                func rank(_ s: ControlState) -> [String] {
                    let rtn = s.procedure?.kind == .rtnStart
                    return [rtn ? "1" : "0", rtn ? s.procedure!.startedAt : "", String(format: "%020lld", s.epoch)]
                }
                if let state = try? await ControlStore(c).load(journal: 50), state.fencedReason == nil,
                    best.map({
                        rank(state).lexicographicallyPrecedes(rank($0.control)) == false
                            && rank(state) != rank($0.control)
                    }) ?? true
                {
                    best = Report(site: site.name, control: state, replication: (try? await Replication.lags(c)) ?? [])
                }
                await c.close()
            }
            guard let best else { throw ControlError(.unreachable, "no mart of the topology answers") }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(best), as: UTF8.self))
                return
            }
            let c = best.control
            print(
                "phase \(c.phase.rawValue), epoch \(c.epoch), reporting mart \(c.reportingSite ?? "?")/mart (as \(best.site) reports)"
            )
            guard let p = c.procedure, p.kind == .rtnStart else {
                print("no return to normal has run")
                return
            }
            let steps = DeploymentMachine.returnSteps(
                switchOver: p.stepsDone.contains(.switchOver)
                    || c.reportingSite == p.target && !p.stepsDone.isEmpty
                        && topology.deployment.mode == .activeStandby
            )
            let total = steps.count
            print(
                "rtn start \(p.target): \(p.status.rawValue), \(p.stepsDone.count)/\(total) steps, started by \(p.startedBy) at \(p.startedAt)"
            )
            for (i, s) in steps.enumerated() {
                print("  \(i + 1). \(s.rawValue): \(p.stepsDone.contains(s) ? "done" : "pending") — \(s.what)")
            }
            for r in best.replication {
                print(
                    "replication to \(r.subscription): \(r.state), lag \(r.replayLagSeconds.map { String(format: "%.3f s", $0) } ?? "-"), \(r.bytesBehind ?? 0) bytes behind"
                )
            }
        }
    }
}
