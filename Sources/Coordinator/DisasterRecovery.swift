import Control
import Foundation
import Logging
import PostgresClient
import Topology

/// `bcpipe dr declare` (CONTRACT 6.4): the failed site is probed from here and asked about at
/// every witness, then the ``DeploymentMachine`` decides (every safety rule) and its steps are
/// carried out — each journaled in the surviving mart, done once (a rerun after the command was
/// killed resumes at the first step not done), under the mart's procedure lock so that of two
/// operators declaring at once one carries it out and the other is told it is done.
public struct DisasterRecovery: Sendable {
    public var topology: Topology
    public var failedSite: String
    public var confirmSiteDown: Bool
    public var dryRun: Bool
    /// `--without-witness`: go on when witnesses are configured but none answers (journaled).
    public var withoutWitness: Bool
    /// `BCPIPE_COORDINATOR_TOKEN`, sent to the witnesses.
    public var token: String?
    public var actor: String
    /// A fault-injection point for the tests (`BCPIPE_FAILPOINT`).
    public var failpoint: String?
    public var say: @Sendable (String) -> Void

    public init(
        topology: Topology, failedSite: String, confirmSiteDown: Bool, dryRun: Bool, withoutWitness: Bool = false,
        token: String? = nil, actor: String, failpoint: String? = nil, say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.failedSite = failedSite
        self.confirmSiteDown = confirmSiteDown
        self.dryRun = dryRun
        self.withoutWitness = withoutWitness
        self.token = token
        self.actor = actor
        self.failpoint = failpoint
        self.say = say
    }

    public func run() async throws -> ProcedureOutcome {
        let command = DeploymentMachine.Command.declare(failed: failedSite, confirmed: confirmSiteDown || dryRun)
        var machine = DeploymentMachine(topology: topology, marts: [:])
        let survivor = try machine.journalSite(for: command)
        let verdict = await checkNotPartitioned()
        machine.partitionChecked(verdict)
        let safety: (String, String)?
        if case .proceed(let safeguard, let found) = verdict {
            say(
                "safety: --confirm-site-down given; \(failedSite)'s server and coordinator do not answer from here; \(found)"
            )
            safety = (safeguard.rawValue, found)
        } else {
            safety = nil
        }
        let failed = failedSite
        let run = ProcedureRun(
            command: command, dryRun: dryRun, actor: actor, failpoint: failpoint, say: say,
            args: { _ in ["survivor": survivor, "guard": safety?.0 ?? ""] },
            dryRunHeader: {
                "dry run: would declare \(failed) failed onto \($0.journal), epoch \($0.epochFrom) → \($0.epochTo):"
            },
            doneMessage: {
                "disaster recovery done: epoch \($0.epochTo), reporting mart \($0.journal)/mart, phase emergency"
            },
            safetyCheck: safety.map { (status: $0.0, found: $0.1) })
        return try await MartSessions.with(topology, timeoutMilliseconds: 30_000, application: "bcpipe dr declare") {
            sessions in
            // Fills the survivor's identity (site, mode, role) only where still unset, as its
            // coordinator does at its first start; the decision comes after, on what it holds.
            do {
                try await sessions.store(survivor).initialize(topology: topology, site: survivor)
            } catch let e as ControlError where e.code == .unreachable {
                throw ControlError(
                    .unreachable,
                    "cannot reach the surviving site \(survivor)'s mart (\(e.cause.map { "\($0)" } ?? e.message)); disaster recovery runs against the survivor",
                    cause: e.cause)
            }
            let interpreter = EffectInterpreter(topology: topology, sessions: sessions, actor: actor, say: say)
            return try await run.run(machine, sessions: sessions, interpreter: interpreter)
        }
    }

    /// The partition rule (CONTRACT 6.4): the failed site is looked at from here and asked about
    /// at every witness, all at once; ``PartitionCheck`` decides (the machine refuses on it).
    func checkNotPartitioned() async -> PartitionCheck.Verdict {
        let failed = topology.site(named: failedSite)!
        async let fromHere = Reachability.probe(failed)
        async let witnesses = withTaskGroup(of: (Int, PartitionCheck.WitnessAnswer).self) { group in
            for (i, w) in topology.witnesses.enumerated() {
                group.addTask { [token, failedSite] in
                    (i, await WitnessClient(address: w, token: token).reach(failedSite))
                }
            }
            var answers: [(Int, PartitionCheck.WitnessAnswer)] = []
            for await a in group { answers.append(a) }
            return answers.sorted { $0.0 < $1.0 }.map { (address: topology.witnesses[$0.0], answer: $0.1) }
        }
        let here = await fromHere
        let observations = PartitionCheck.Observations(
            failedSite: failedSite, postgresFromHere: here.postgres, coordinatorFromHere: here.coordinator,
            coordinatorAddress: failed.coordinator.description, witnesses: await witnesses,
            withoutWitness: withoutWitness)
        return PartitionCheck.decide(observations)
    }
}
