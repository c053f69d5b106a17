import ArgumentParser
import Foundation
import Lab
import Logging
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe demo`: the main job. For now it brings up the two-site lab, shows what is running
    /// and checks every site's databases answer through the WAN, then takes the lab down.
    /// The business-continuity story (CONTRACT 7) is added act by act as the pipeline grows.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the local two-site lab and show the deployment (removes it unless --keep).")
        @Flag(help: "Leave the lab running afterwards.") var keep = false
        @Option(help: "Lab directory (default: a new temporary directory).") var dir: String?
        @Option(name: .customLong("base-port"), help: "First port of the lab's range of 100.") var basePort: Int =
            25_400

        func run() async throws {
            let directory =
                dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("bcpipe-demo-\(getpid())").path
            let lab = LocalLab(directory: directory, executable: currentExecutable(), logger: .cli)
            var options = LocalLab.Options()
            options.basePort = basePort
            options.stuckThreshold = 20
            print("== bringing up the two-site lab in \(directory)")
            let started = Date()
            do {
                try await lab.up(options)
                print("   ready in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
                for line in try lab.status() { print(line) }
                var failures = 0
                for site in try lab.requireState().sites {
                    let topology = try Topology.load(path: lab.topologyPath(site: site.name))
                    print("== as \(site.name) sees the deployment (\(lab.topologyPath(site: site.name)))")
                    for s in topology.sites {
                        for database in topology.databases(atSite: s.name) {
                            var config = PostgresConfiguration(conninfo: s.postgres, database: database)
                            config.connectTimeout = 3
                            let route = s.name == site.name ? "local" : "via WAN"
                            do {
                                let conn = try await PostgresConnection.connect(config)
                                let rows = try await conn.query(
                                    "SELECT string_agg(component || ' v' || version, ', ' ORDER BY component, version) FROM public.bcpipe_migrations"
                                )
                                print(
                                    "   \(s.name)/\(database) (\(route)): schema \(try rows[0].decode(0, as: String.self))"
                                )
                                await conn.close()
                            } catch {
                                failures += 1
                                print("   \(s.name)/\(database) (\(route)): FAILED — \(error)")
                            }
                        }
                    }
                }
                if failures > 0 { throw LabError("\(failures) database(s) did not answer") }
            } catch {
                if !keep { try? lab.down(remove: dir == nil) }
                throw error
            }
            if keep {
                print("== the lab keeps running: bcpipe lab down --dir \(directory)")
            } else {
                try lab.down(remove: dir == nil)
                print("== lab stopped; no process left")
            }
        }
    }
}
