import ArgumentParser
import Foundation
import Lab
import Logging
import Topology

extension Topology.Mode: ExpressibleByArgument {}
extension Topology.LateDataPolicy: ExpressibleByArgument {}
extension LinkState: ExpressibleByArgument {}

extension BCPipe {
    /// `bcpipe lab …`: the local two-site lab.
    struct LabCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lab",
            abstract: "Run a local two-site deployment: PostgreSQL servers, WAN link simulator, topology files.",
            subcommands: [
                Up.self, Down.self, Link.self, FailSite.self, AddSite.self, LabStatus.self, WANSimulatorCommand.self,
            ])
    }
}

struct LabDirectory: ParsableArguments {
    @Option(name: .long, help: "Lab directory (default: $BCPIPE_LAB_DIR, else ./bcpipe-lab).")
    var dir: String?

    var lab: LocalLab {
        let path = dir ?? ProcessInfo.processInfo.environment["BCPIPE_LAB_DIR"] ?? "bcpipe-lab"
        return LocalLab(directory: path, executable: currentExecutable(), logger: Logger.cli)
    }
}

extension BCPipe.LabCommand {
    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start the lab (idempotent); returns when every part is ready.")
        @OptionGroup var location: LabDirectory
        @Option(help: "active-standby or active-active.") var mode: Topology.Mode = .activeStandby
        @Option(name: .customLong("stuck-threshold"), help: "extract.data_stuck_threshold, seconds.")
        var stuckThreshold: Int = 28_800
        @Option(name: .customLong("late-data"), help: "discard or backfill.") var lateData: Topology.LateDataPolicy =
            .discard
        @Option(name: .customLong("base-port"), help: "First port of the lab's range of 100.") var basePort: Int =
            25_400
        @Option(help: "Live traffic, events/s over all sources, from a generator process at each site (0: none).")
        var traffic: Double = 0
        @Flag(
            help: "Also run a Prometheus scraping every lab process, with the alert rules loaded (needs `prometheus`).")
        var prometheus = false
        @Option(help: "The alert rules the lab's Prometheus loads.")
        var prometheusRules = "deploy/prometheus/alerts.yml"

        func validate() throws {
            guard stuckThreshold >= 1 else { throw ValidationError("--stuck-threshold must be at least 1 second") }
            guard traffic >= 0, traffic <= 100_000 else {
                throw ValidationError("--traffic must be 0 … 100000 events/s")
            }
        }

        func run() async throws {
            var options = LocalLab.Options()
            options.mode = mode
            options.stuckThreshold = stuckThreshold
            options.lateData = lateData
            options.basePort = basePort
            options.traffic = traffic
            if prometheus {
                options.prometheusRules = URL(fileURLWithPath: prometheusRules).standardizedFileURL.path
            }
            let lab = location.lab
            try await lab.up(options)
            for line in try lab.status() { print(line) }
            print(
                "topology: \(lab.topologyPath) (per site: \(try lab.requireState().sites.map { lab.topologyPath(site: $0.name) }.joined(separator: ", ")))"
            )
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop everything the lab started; no process is left behind.")
        @OptionGroup var location: LabDirectory
        @Flag(help: "Also delete the lab directory.") var remove = false

        func run() async throws {
            try location.lab.down(remove: remove)
            print("lab stopped\(remove ? " and removed" : "")")
        }
    }

    struct Link: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cut or restore the WAN between two sites, both directions.")
        @Argument var siteA: String
        @Argument var siteB: String
        @Argument(help: "up or down") var state: String
        @Option(help: "How a cut link behaves: refuse (resets) or blackhole (silence).") var mode: CutMode = .refuse
        @OptionGroup var location: LabDirectory

        enum CutMode: String, ExpressibleByArgument { case refuse, blackhole }

        func validate() throws {
            guard state == "up" || state == "down" else {
                throw ValidationError("the link state must be up or down (got \"\(state)\")")
            }
        }

        func run() async throws {
            let linkState: LinkState = state == "up" ? .up : (mode == .refuse ? .refuse : .blackhole)
            try location.lab.setLink(siteA, siteB, linkState)
            print("link \(siteA) ↔ \(siteB): \(linkState.rawValue)")
        }
    }

    struct FailSite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fail-site",
            abstract: "Site disaster: SIGKILL the site's processes and stop its PostgreSQL server immediately.")
        @Argument var site: String
        @OptionGroup var location: LabDirectory

        func run() async throws {
            try location.lab.failSite(site)
            print("site \(site) failed: its processes were killed and its PostgreSQL server stopped (immediate)")
        }
    }

    struct AddSite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-site", abstract: "Provision an empty replacement site for return to normal.")
        @Argument var site: String
        @OptionGroup var location: LabDirectory

        func run() async throws {
            let lab = location.lab
            let state = try await lab.addSite(site)
            guard let s = state.site(site) else { return }
            print(
                "site \(site) ready: PostgreSQL 127.0.0.1:\(state.postgresPort(s)), topology \(lab.topologyPath(site: site))"
            )
        }
    }

    struct LabStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Show the lab's servers and links.")
        @OptionGroup var location: LabDirectory

        func run() async throws {
            for line in try location.lab.status() { print(line) }
        }
    }

    struct WANSimulatorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wan-simulator", abstract: "Run the WAN link simulator (started by lab up).",
            shouldDisplay: false)
        @OptionGroup var location: LabDirectory

        func run() async throws {
            let lab = location.lab
            let sim = WANSimulator(configPath: lab.directory + "/wan.json", ackPath: lab.directory + "/wan.ack")
            try sim.run()
        }
    }
}
