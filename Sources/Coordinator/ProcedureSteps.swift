import Foundation
import PostgresClient
import Topology

/// What `dr declare` and `rtn start` share: one procedure at a time (resumed when it is the same
/// one), its row in `control.procedure`, and its steps run in order, each done once and journaled
/// with the operator in the same transaction that marks it done.
struct ProcedureSteps: Sendable {
    var mart: PostgresConnection
    var kind: String
    var target: String
    var actor: String
    var steps: [(name: String, what: String)]
    var say: @Sendable (String) -> Void

    /// Takes the procedure lock of a mart for this session: one procedure at a time writes to a
    /// mart — the one it journals to and any other it changes (a returning or switched-to mart),
    /// so a declaration still running against that mart finishes before its control row is
    /// rewritten. Waits up to 60 s.
    static func lock(_ c: PostgresConnection, site: String) async throws {
        try await c.execute("SET lock_timeout = '60s'")
        do {
            try await c.query("SELECT pg_advisory_lock(hashtext('bcpipe procedure'))")
        } catch let e as PostgresError where e.sqlState == "55P03" {
            throw ControlError(
                "another procedure has held \(site)'s mart for 60 s (see bcpipe status); run this again when it has finished"
            )
        }
    }

    /// The procedure to carry out: the running one if it is this one (resumed), else a new row
    /// made by `create` (given the current state). Another running procedure is refused.
    func begin(_ state: ControlState, create: () async throws -> Int64) async throws -> ControlState.Procedure {
        if let p = state.procedure, p.status == "running" {
            guard p.kind == kind, p.target == target else {
                throw SafetyRefusal(
                    rule: "one-procedure-at-a-time",
                    message: "\(p.kind) \(p.target) (started by \(p.startedBy) at \(p.startedAt)) is still in progress",
                    remedy: "finish it first (run it again to resume); see bcpipe status")
            }
            say(
                "resuming \(kind) started by \(p.startedBy) at \(p.startedAt); done: \(p.stepsDone.joined(separator: ", "))"
            )
            return p
        }
        _ = try await create()
        guard let p = try await ControlState.load(mart, journal: 0).procedure else {
            throw ControlError("the procedure row was not recorded")
        }
        return p
    }

    /// Runs the steps `procedure` has not done yet; `perform` does one (idempotently) and returns
    /// its journal detail (JSON). Then marks the procedure done.
    func run(_ procedure: ControlState.Procedure, perform: (String) async throws -> String) async throws {
        let done = Set(procedure.stepsDone)
        let failpoint = ProcessInfo.processInfo.environment["BCPIPE_FAILPOINT"]
        for (i, step) in steps.enumerated() {
            let label = "  \(i + 1)/\(steps.count) \(step.name)"
            if done.contains(step.name) {
                say("\(label): already done")
                continue
            }
            say("\(label): \(step.what) …")
            let started = Date()
            let detail = try await perform(step.name)
            let (id, name, epoch, who, journalName) = (
                procedure.id, step.name, procedure.epochTo, actor, "\(kind) \(target)"
            )
            try await mart.transaction { c in
                try await c.query(
                    "UPDATE control.procedure SET steps_done = array_append(steps_done, $2) WHERE id = $1", [id, name])
                try await c.query(
                    """
                    INSERT INTO control.journal (epoch, actor, procedure, step, status, detail)
                    VALUES ($1, $2, $3, $4, 'done', $5::jsonb)
                    """, [epoch, who, journalName, name, detail])
            }
            say("\(label): done in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
            // A fault-injection point for the tests: the command dies here as if killed.
            if failpoint == "\(kind.replacingOccurrences(of: " ", with: "-")):after:\(step.name)" {
                kill(getpid(), SIGKILL)
            }
        }
        try await mart.query(
            "UPDATE control.procedure SET status = 'done', finished_at = now() WHERE id = $1", [procedure.id])
    }
}
