import ArgumentParser
import Coordinator
import Foundation
import Topology

extension BCPipe {
    /// `bcpipe status`: the deployment as the databases of every site report it.
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show phase, mode, epoch and every site's server as this host sees them.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Flag(help: "Print one JSON document.") var json = false

        func run() async throws {
            let topology = try topologyOptions.load()
            let status = await DeploymentStatus.gather(
                topology, token: AccessToken.fromEnvironment("BCPIPE_COORDINATOR_TOKEN"))
            if json {
                print(String(decoding: try DeploymentStatus.encoder.encode(status), as: UTF8.self))
                return
            }
            for line in status.lines() { print(line) }
        }
    }
}
