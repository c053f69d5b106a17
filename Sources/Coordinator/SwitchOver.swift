import Control
import Foundation
import PostgresClient
import Topology

/// Moving the reporting role from one mart to the other. In active-standby this is the
/// switch-over of the writer: the old active stops writing, the standby catches up with it, takes
/// over, and the old active follows the new one; in active-active both marts are written already
/// and only the reporting mart moves. Either way under a new epoch, so that no epoch ever has two
/// writable reporting marts (`Tests/UnitTests/EpochModelTests.swift` checks the rule over
/// every interleaving of the procedures).
///
/// `bcpipe switchover --to SITE` runs it during normal operation (a planned switch-over, e.g.
/// before maintenance of the active site); `bcpipe rtn start --active NEW` runs it as its last
/// step but one.
public struct SwitchOver: Sendable {
    public var topology: Topology
    public var to: String
    public var dryRun: Bool
    public var actor: String
    public var say: @Sendable (String) -> Void

    public init(
        topology: Topology, to: String, dryRun: Bool, actor: String, say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.to = to
        self.dryRun = dryRun
        self.actor = actor
        self.say = say
    }

    public func run() async throws -> ProcedureOutcome {
        let to = to
        let activeStandby = topology.deployment.mode == .activeStandby
        // The journaling mart: the one holding a switch-over in progress (resumed), else the
        // reporting one.
        let marts = await ControlStore.loadAll(topology)
        let run = ProcedureRun(
            command: .switchOver(to: to, targetInSync: false), dryRun: dryRun, actor: actor, say: say,
            args: { ["from": $0.journal] },
            dryRunHeader: {
                "dry run: would switch the reporting mart from \($0.journal) to \(to), epoch \($0.epochFrom) → \($0.epochTo):"
            },
            doneMessage: {
                "switch-over done: \(to)/mart is the reporting mart, \($0.journal) follows it; epoch \($0.epochTo)"
            })
        return try await MartSessions.with(topology, timeoutMilliseconds: 600_000, application: "bcpipe switchover") {
            sessions in
            var machine = DeploymentMachine(topology: topology, marts: marts)
            let journal = try machine.journalSite(for: run.command)
            // Both marts, each under its lock (the journaling one first). One that does not answer
            // is left out: the machine refuses on the phase first, then on its absence.
            _ = try await sessions.store(journal)
            var inSync = false
            if let target = try await sessions.storeIfReachable(to) {
                machine.observed(to, try await target.load(journal: 0))
                inSync = true
                if activeStandby, journal != to {
                    let subscribed = try await Replication.subscriptionExists(target.connection, site: to)
                    inSync = subscribed ? try await Replication.isSynchronised(target.connection, site: to) : false
                }
            } else {
                machine.unreachable(to)
            }
            var command = run
            command.command = .switchOver(to: to, targetInSync: inSync)
            let interpreter = EffectInterpreter(topology: topology, sessions: sessions, actor: actor, say: say)
            return try await command.run(machine, sessions: sessions, interpreter: interpreter)
        }
    }
}
