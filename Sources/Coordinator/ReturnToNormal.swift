import Control
import Foundation
import PostgresClient
import Topology

/// `bcpipe rtn start` (CONTRACT 6.5): purge hold on, a consistent copy of the reporting mart to
/// the returning site without a gap — a logical slot created with an exported snapshot, the
/// tables dumped from that snapshot, then (active-standby) a subscription from that very slot
/// with `copy_data = false`, or (active-active) the copied watermarks as the new extractor's
/// start — then the site's sources, IDBs and collectors re-admitted, purge hold off, `normal`.
/// The ``DeploymentMachine`` decides and orders the steps; journaled and resumable like
/// `dr declare`; the copy step is redone whole if interrupted.
public struct ReturnToNormal: Sendable {
    public var topology: Topology
    public var site: String
    public var active: String
    public var dryRun: Bool
    public var actor: String
    /// A fault-injection point for the tests (`BCPIPE_FAILPOINT`).
    public var failpoint: String?
    public var say: @Sendable (String) -> Void

    public init(
        topology: Topology, site: String, active: String, dryRun: Bool, actor: String, failpoint: String? = nil,
        say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.site = site
        self.active = active
        self.dryRun = dryRun
        self.actor = actor
        self.failpoint = failpoint
        self.say = say
    }

    public func run() async throws -> ProcedureOutcome {
        let command = DeploymentMachine.Command.returnToNormal(site: site, active: active)
        // With a switch-over the reporting mart is whichever the marts say (it may be the
        // returning one already, when this ran before).
        let marts = site == active ? await ControlStore.loadAll(topology) : [:]
        let (site, active) = (site, active)
        // What the returning site is afterwards.
        let role: Role = topology.deployment.mode == .activeActive || site == active ? .active : .standby
        let run = ProcedureRun(
            command: command, dryRun: dryRun, actor: actor, failpoint: failpoint, say: say,
            args: { _ in ["active": active] },
            dryRunHeader: { p in
                "dry run: would return \(site) (as \(role.rawValue)) with \(active) reporting, epoch \(p.epochFrom) → \(p.admitted)\(p.admitted != p.epochTo ? " → \(p.epochTo) (switch-over)" : ""):"
            },
            doneMessage: { p in
                "return to normal done: \(site) is \(role == .active ? "active" : "the standby"), \(active)/mart reports; epoch \(p.epochTo), phase normal"
            })
        return try await MartSessions.with(topology, timeoutMilliseconds: 600_000, application: "bcpipe rtn start") {
            sessions in
            let interpreter = EffectInterpreter(topology: topology, sessions: sessions, actor: actor, say: say)
            return try await run.run(
                DeploymentMachine(topology: topology, marts: marts), sessions: sessions, interpreter: interpreter
            ) { machine, sessions in
                // The returning mart: every step from `prepare` on writes it, under its lock. One
                // that does not answer is left out: the machine's rules come first, and the first
                // step that needs it fails, to be resumed when it answers.
                if let journal = try? machine.journalSite(for: command), journal != site {
                    if let returning = try await sessions.storeIfReachable(site) {
                        machine.observed(site, try await returning.load(journal: 0))
                    }
                }
            }
        }
    }
}
