import Foundation
import PostgresClient
import Topology

/// Moving the reporting role from one mart to the other. In active-standby this is the
/// switch-over of the writer: the old active stops writing, the standby catches up with it, takes
/// over, and the old active follows the new one; in active-active both marts are written already
/// and only the reporting mart moves. Either way under a new epoch, so that no epoch ever has two
/// writable reporting marts (`Tests/CoordinatorTests/EpochModelTests.swift` checks the rule over
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

    public static let kind = "switchover"

    public static func steps(mode: Topology.Mode) -> [(name: String, what: String)] {
        switch mode {
        case .activeStandby:
            [
                (
                    "switch-over",
                    "the active stops writing, the standby catches up and becomes the active; the old active follows it; new epoch"
                )
            ]
        case .activeActive:
            [("move-reporting", "the reporting mart moves to the other active mart; new epoch")]
        }
    }

    public init(
        topology: Topology, to: String, dryRun: Bool, actor: String = operatorIdentity(),
        say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.to = to
        self.dryRun = dryRun
        self.actor = actor
        self.say = say
    }

    public func run() async throws -> DisasterRecovery.Outcome {
        guard let newSite = topology.site(named: to) else {
            throw TopologyError(
                path: "--to",
                message: "unknown site \"\(to)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
        }
        guard topology.extractors.contains(where: { $0.site == to }) else {
            throw SafetyRefusal(
                rule: "target-has-a-mart", message: "site \(to) has no extractor (and so no mart) in the topology",
                remedy: "switch over to a site that has a mart")
        }
        // The mart that journals it: the one holding a switch-over in progress (resumed), else the
        // reporting mart.
        let journaling = await ControlState.loadAll(topology).first {
            $0.value.procedure.map { $0.status == "running" && $0.kind == Self.kind } ?? false
        }
        var journalSite = journaling.flatMap { topology.site(named: $0.key) }
        if journalSite == nil { journalSite = await ControlState.reportingSite(topology) }
        guard let current = journalSite else {
            throw ControlError("no reporting mart answers; a switch-over needs both marts (see bcpipe status)")
        }
        let mart = try await ReturnToNormal.connect(current)
        defer { Task { await mart.close() } }
        try await ProcedureSteps.lock(mart, site: current.name)
        let state = try await ControlState.load(mart, journal: 0)
        let resuming =
            state.procedure.map { $0.status == "running" && $0.kind == Self.kind && $0.target == to } ?? false
        if current.name == to && !resuming {
            let message = "already done: \(to)/mart is the reporting mart; phase \(state.phase), epoch \(state.epoch)"
            say(message)
            return .alreadyDone(message)
        }
        let steps = Self.steps(mode: topology.deployment.mode)
        let runner = ProcedureSteps(mart: mart, kind: Self.kind, target: to, actor: actor, steps: steps, say: say)
        guard resuming || state.phase == "normal" else {
            throw SafetyRefusal(
                rule: "phase", message: "the deployment is in phase \(state.phase), not normal",
                remedy: "a planned switch-over runs in normal operation; after a disaster use rtn start --active \(to)")
        }
        let target: PostgresConnection
        do {
            target = try await ReturnToNormal.connect(newSite)
        } catch {
            throw ControlError("cannot reach \(to)'s mart (\(error)); a switch-over needs both sites")
        }
        defer { Task { await target.close() } }
        try await ProcedureSteps.lock(target, site: to)
        if !resuming {
            let other = try await ControlState.load(target, journal: 0)
            guard other.fencedReason == nil, other.phase == "normal", other.epoch == state.epoch else {
                throw SafetyRefusal(
                    rule: "target-in-service",
                    message:
                        "\(to)'s mart is not in service with \(current.name) (phase \(other.phase), epoch \(other.epoch) vs \(state.epoch)\(other.fencedReason.map { "; fenced: \($0)" } ?? ""))",
                    remedy: "bring it back with rtn start first")
            }
            if topology.deployment.mode == .activeStandby {
                guard try await Replication.subscriptionExists(target, site: to),
                    try await Replication.isSynchronised(target, site: to)
                else {
                    throw SafetyRefusal(
                        rule: "standby-in-sync",
                        message:
                            "\(to)'s mart does not follow \(current.name)'s yet (its initial copy has not finished)",
                        remedy: "wait until bcpipe status shows its replication streaming, then run this again")
                }
            }
            if dryRun {
                say(
                    "dry run: would switch the reporting mart from \(current.name) to \(to), epoch \(state.epoch) → \(Epochs.next(after: state.epoch, at: current.name, topology)):"
                )
                for (i, s) in steps.enumerated() { say("  \(i + 1). \(s.name): \(s.what)") }
                return .dryRun
            }
        }
        let (epochNow, who, from) = (state.epoch, actor, current.name)
        let epochTo = Epochs.next(after: state.epoch, at: current.name, topology)
        let procedure = try await runner.begin(state) {
            try await mart.query(
                """
                INSERT INTO control.procedure (kind, target, args, epoch_from, epoch_to, started_by)
                VALUES ($1, $2, jsonb_build_object('from', $3::text), $4::bigint, $6::bigint, $5) RETURNING id
                """, [Self.kind, to, from, epochNow, who, epochTo])[0].decode(0, as: Int64.self)
        }
        try await runner.run(procedure) { step in
            switch step {
            case "switch-over":
                return try await Self.switchOver(
                    old: mart, new: target, oldSite: current, newSite: newSite, epoch: procedure.epochTo)
            case "move-reporting":
                for c in [target, mart] {
                    try await c.query(
                        "UPDATE control.deployment SET reporting_site = $1, epoch = GREATEST(epoch, $2), updated_at = now()",
                        [to, procedure.epochTo])
                }
                return #"{"reporting": "\#(to)"}"#
            default:
                throw ControlError("unknown step \(step)")
            }
        }
        say("switch-over done: \(to)/mart is the reporting mart, \(from) follows it; epoch \(procedure.epochTo)")
        return .done(epoch: procedure.epochTo)
    }

    /// Active-standby switch-over onto `newSite`, which follows `oldSite` by logical replication:
    /// the old active becomes a standby under `epoch` (its extractor's in-flight cycle finishes
    /// first — the update waits for the control row the cycle holds — and later cycles see the
    /// role), a marker written after that is awaited on the new site (so it holds everything), the
    /// new site stops subscribing and takes over the sequences, the old one subscribes to it from
    /// a slot made before the new one writes, then the new site becomes the active one under
    /// `epoch`. Idempotent: a rerun after a kill goes on from wherever it stopped.
    static func switchOver(
        old: PostgresConnection, new target: PostgresConnection, oldSite: Topology.Site, newSite: Topology.Site,
        epoch: Int64
    ) async throws -> String {
        let site = newSite.name
        if try await Replication.subscriptionExists(target, site: site) {
            try await old.query(
                "UPDATE control.deployment SET role = 'standby', epoch = GREATEST(epoch, $1), updated_at = now()",
                [epoch])
            let marker = try await old.query(
                """
                INSERT INTO control.extractor (site, epoch, complete_through, cycles) VALUES ($1, 0, NULL, 0)
                ON CONFLICT (site) DO UPDATE SET updated_at = clock_timestamp() RETURNING updated_at::text
                """, ["switch-over marker"])[0][0]!
            let deadline = Date().addingTimeInterval(300)
            while true {
                let seen = try await target.query(
                    "SELECT updated_at::text FROM control.extractor WHERE site = 'switch-over marker'"
                ).first?[0]
                if seen == marker { break }
                guard Date() < deadline else {
                    throw ControlError(
                        "\(site) did not catch up with \(oldSite.name) within 300 s; run the command again to resume")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await Replication.detach(target, site: site)
            try await Replication.dropSlot(old, Replication.subscription(of: site))
        } else if try await ControlState.load(old, journal: 0).role == "active",
            try await ControlState.load(target, journal: 0).role != "active"
        {
            throw ControlError(
                "\(site)'s mart does not follow \(oldSite.name)'s and is not the active one: nothing proves it holds everything; see bcpipe status"
            )
        }
        try await Replication.fixSequences(target)
        try await Replication.ensurePublication(target)
        let name = Replication.subscription(of: oldSite.name)
        if try await !Replication.subscriptionExists(old, site: oldSite.name) {
            // Both marts hold the same rows now: follow from here, no copy.
            try await Replication.dropSlot(old, name)
            try await Replication.subscribe(
                old, site: oldSite.name, publisher: target, publisherSite: newSite.name, copyData: false)
        }
        // (The delete is replicated to the old one.)
        try await target.query("DELETE FROM control.extractor WHERE site = 'switch-over marker'")
        try await target.query(
            "UPDATE control.deployment SET role = 'active', reporting_site = $1, epoch = GREATEST(epoch, $2), updated_at = now()",
            [site, epoch])
        try await old.query("UPDATE control.deployment SET reporting_site = $1, updated_at = now()", [site])
        return #"{"active": "\#(site)", "standby": "\#(oldSite.name)"}"#
    }
}
