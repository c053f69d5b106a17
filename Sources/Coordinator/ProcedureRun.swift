import Control
import Foundation
import Logging
import PostgresClient
import Topology

/// The marts a procedure holds: one connection each, opened when first needed and kept under that
/// mart's procedure lock until the procedure ends (one procedure at a time writes to a mart), all
/// closed by ``with(_:timeoutMilliseconds:application:_:)`` however the procedure ends.
actor MartSessions {
    let topology: Topology
    let timeoutMilliseconds: Int
    let application: String
    private var stores: [String: ControlStore] = [:]

    private init(topology: Topology, timeoutMilliseconds: Int, application: String) {
        self.topology = topology
        self.timeoutMilliseconds = timeoutMilliseconds
        self.application = application
    }

    static func with<T: Sendable>(
        _ topology: Topology, timeoutMilliseconds: Int, application: String,
        _ body: (MartSessions) async throws -> T
    ) async throws -> T {
        let sessions = MartSessions(
            topology: topology, timeoutMilliseconds: timeoutMilliseconds, application: application)
        do {
            let result = try await body(sessions)
            await sessions.closeAll()
            return result
        } catch {
            await sessions.closeAll()
            throw error
        }
    }

    /// The mart of `site`, connected and locked.
    func store(_ site: String) async throws -> ControlStore {
        if let s = stores[site] { return s }
        guard let s = topology.site(named: site) else {
            throw TopologyError(path: "sites", message: "unknown site \"\(site)\"")
        }
        let c: PostgresConnection
        do {
            c = try await PostgresConnection.connect(configuration(s))
        } catch let error as PostgresError {
            throw ControlError(.unreachable, "cannot reach \(site)'s mart (\(error))", cause: error)
        }
        let store = ControlStore(c)
        do {
            try await store.lockProcedures(site: site)
        } catch {
            await c.close()
            throw error
        }
        stores[site] = store
        return store
    }

    /// ``store(_:)``, or nil when the mart does not answer (a lock held elsewhere still throws).
    func storeIfReachable(_ site: String) async throws -> ControlStore? {
        do {
            return try await store(site)
        } catch let e as ControlError where e.code == .unreachable {
            return nil
        }
    }

    func configuration(_ site: Topology.Site, database: String = Topology.martDatabase) -> PostgresConfiguration {
        var config = PostgresConfiguration(conninfo: site.postgres, database: database)
        config.connectTimeout = 5
        config.statementTimeoutMilliseconds = timeoutMilliseconds
        config.applicationName = application
        return config
    }

    var held: [String] { stores.keys.sorted() }

    private func closeAll() async {
        for s in stores.values { await s.connection.close() }
        stores = [:]
    }
}

/// Carries out a procedure the ``DeploymentMachine`` decides: the journaling mart locked and read,
/// the decision (refused, already done, dry run, begun or resumed), then each step's effects in
/// order through ``EffectInterpreter``, each step marked done and journaled with the operator.
/// `dr declare`, `rtn start` and `switchover` are this with their own messages.
struct ProcedureRun: Sendable {
    var command: DeploymentMachine.Command
    var dryRun: Bool
    var actor: String
    /// A fault-injection point for the tests (`dr-declare:after:fence`): the command dies there as
    /// if killed.
    var failpoint: String?
    var say: @Sendable (String) -> Void
    /// The procedure's arguments as journaled (`control.procedure.args`).
    var args: @Sendable (DeploymentMachine.Plan) -> [String: String] = { _ in [:] }
    /// The first line of a dry run, before the steps.
    var dryRunHeader: @Sendable (DeploymentMachine.Plan) -> String
    var doneMessage: @Sendable (DeploymentMachine.Plan) -> String
    /// Journaled with a new procedure: the guard that let it proceed and what was found.
    var safetyCheck: (status: String, found: String)?
    /// Each step also goes to the log (with `--log-format json`, one object per step with
    /// `procedure`, `step`, `epoch`), beside what `say` prints for the operator.
    var logger = Logger(label: "bcpipe.procedure")

    /// Runs it. `observe` reads (and locks) the other marts the decision needs, after the
    /// journaling one.
    func run(
        _ machine: DeploymentMachine, sessions: MartSessions, interpreter: EffectInterpreter,
        observe: @Sendable (inout DeploymentMachine, MartSessions) async throws -> Void = { _, _ in }
    ) async throws -> ProcedureOutcome {
        var machine = machine
        let journalSite = try machine.journalSite(for: command)
        let journal = try await sessions.store(journalSite)
        machine.observed(journalSite, try await journal.load(journal: 0))
        try await observe(&machine, sessions)
        let plan: DeploymentMachine.Plan
        switch machine.decide(command) {
        case .refuse(let error):
            throw error
        case .alreadyDone(let message):
            say(message)
            return .alreadyDone(message)
        case .begin(let p):
            if dryRun {
                say(dryRunHeader(p))
                for (i, s) in p.steps.enumerated() { say("  \(i + 1). \(s.rawValue): \(s.what)") }
                return .dryRun
            }
            machine.recorded(
                id: try await journal.insertProcedure(p, args: args(p), actor: actor, safetyCheck: safetyCheck))
            plan = p
        case .resume(let p):
            let running = machine.marts[journalSite]?.running
            let done = p.done.map(\.rawValue).joined(separator: ", ")
            let started = "started by \(running?.startedBy ?? "?") at \(running?.startedAt ?? "?")"
            if dryRun {
                say("dry run: would resume \(p.journalName) \(started); done: \(done)")
                return .dryRun
            }
            say("resuming \(p.kind.rawValue) \(started); done: \(done)")
            plan = p
        }
        try await steps(&machine, plan, journal: journal, sessions: sessions, interpreter: interpreter)
        say(doneMessage(plan))
        return .done(epoch: plan.epochTo)
    }

    /// Each step not done yet: the marts read again, the machine's effects carried out, the step
    /// journaled; then the procedure marked done.
    func steps(
        _ machine: inout DeploymentMachine, _ plan: DeploymentMachine.Plan, journal: ControlStore,
        sessions: MartSessions, interpreter: EffectInterpreter
    ) async throws {
        for (i, step) in plan.steps.enumerated() {
            let label = "  \(i + 1)/\(plan.steps.count) \(step.rawValue)"
            if plan.done.contains(step) {
                say("\(label): already done")
                continue
            }
            for site in await sessions.held {
                machine.observed(site, try await sessions.store(site).load(journal: 0))
            }
            switch machine.next() {
            case .finish:
                return
            case .fail(_, let message):
                throw ControlError(.inconsistent, message)
            case .perform(let s, let effects):
                precondition(s == step, "the machine's next step is \(s), the plan's \(step)")
                say("\(label): \(step.what) …")
                var context = logger
                context[metadataKey: "procedure"] = "\(plan.kind.rawValue)"
                context[metadataKey: "step"] = "\(step.rawValue)"
                context[metadataKey: "epoch"] = "\(plan.epochTo)"
                context.notice("procedure step started")
                let started = Date()
                var detail: [String: String] = [:]
                for effect in effects {
                    detail.merge(try await interpreter.perform(effect), uniquingKeysWith: { a, b in a + "," + b })
                }
                let json = String(decoding: try JSONEncoder.sortedKeys.encode(detail), as: UTF8.self)
                try await journal.stepDone(
                    step, procedure: machine.plan?.id ?? 0, epoch: plan.epochTo, actor: actor,
                    journalName: plan.journalName, detail: json)
                machine.stepDone(step)
                let ms = Int(Date().timeIntervalSince(started) * 1000)
                say("\(label): done in \(ms) ms")
                context.notice("procedure step done", metadata: ["duration_ms": "\(ms)"])
                if failpoint == "\(plan.kind.failpointName):after:\(step.rawValue)" {
                    kill(getpid(), SIGKILL)
                }
            }
        }
        try await journal.finishProcedure(machine.plan?.id ?? 0)
    }
}
