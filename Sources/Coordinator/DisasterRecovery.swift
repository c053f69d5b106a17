import Foundation
import Logging
import PostgresClient
import Topology

/// `bcpipe dr declare` (CONTRACT 6.4): the safety rules, then the steps — each journaled in the
/// surviving mart, done once (a rerun after the command was killed resumes at the first step not
/// done), under a session advisory lock so that of two operators declaring at once one carries it
/// out and the other is told it is done.
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
    public var say: @Sendable (String) -> Void

    public static let steps: [(name: String, what: String)] = [
        ("raise-epoch", "raise the deployment epoch; phase disaster-recovery"),
        ("fence", "write the fence into the surviving IDBs (the failed site's extractor, if it returns, sees it)"),
        ("retire", "retire the failed site's sources and IDBs: extraction stops waiting for them"),
        ("promote", "make the surviving mart active and the reporting mart"),
        ("emergency", "phase emergency"),
    ]

    public enum Outcome: Sendable, Equatable {
        case done(epoch: Int64)
        case alreadyDone(String)
        case dryRun
    }

    public init(
        topology: Topology, failedSite: String, confirmSiteDown: Bool, dryRun: Bool, withoutWitness: Bool = false,
        token: String? = nil, actor: String = operatorIdentity(), say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.failedSite = failedSite
        self.confirmSiteDown = confirmSiteDown
        self.dryRun = dryRun
        self.withoutWitness = withoutWitness
        self.token = token
        self.actor = actor
        self.say = say
    }

    /// The survivor: the first other site with an extractor.
    func survivor() throws -> Topology.Site {
        guard topology.site(named: failedSite) != nil else {
            throw TopologyError(
                path: "--failed-site",
                message:
                    "unknown site \"\(failedSite)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
        }
        guard
            let e = topology.extractors.first(where: { $0.site != failedSite }),
            let s = topology.site(named: e.site)
        else {
            throw SafetyRefusal(
                rule: "survivor", message: "no other site with an extractor survives \(failedSite)",
                remedy: "a deployment needs a second site to recover onto")
        }
        return s
    }

    public func run() async throws -> Outcome {
        let survivor = try survivor()
        guard confirmSiteDown || dryRun else {
            throw SafetyRefusal(
                rule: "confirm-site-down",
                message: "declaring \(failedSite) failed needs --confirm-site-down",
                remedy:
                    "confirm by other means (people at the site, the provider) that \(failedSite) is down — not just unreachable — and add --confirm-site-down"
            )
        }
        // The failed site must answer neither from here nor from any witness: if it does, this is a
        // network partition, not a site failure.
        let (safeguard, partitionCheck) = try await checkNotPartitioned()
        say(
            "safety: --confirm-site-down given; \(failedSite)'s server and coordinator do not answer from here; \(partitionCheck)"
        )

        var config = PostgresConfiguration(conninfo: survivor.postgres, database: Topology.martDatabase)
        config.connectTimeout = 5
        config.statementTimeoutMilliseconds = 30_000
        config.applicationName = "bcpipe dr declare"
        let mart: PostgresConnection
        do {
            mart = try await PostgresConnection.connect(config)
        } catch {
            throw ControlError(
                "cannot reach the surviving site \(survivor.name)'s mart (\(error)); disaster recovery runs against the survivor"
            )
        }
        defer { Task { await mart.close() } }
        try await ControlState.initialize(mart, topology: topology, site: survivor.name)

        if dryRun {
            let state = try await ControlState.load(mart)
            say(
                "dry run: would declare \(failedSite) failed onto \(survivor.name), epoch \(state.epoch) → \(Epochs.next(after: state.epoch, at: survivor.name, topology)):"
            )
            for (i, s) in Self.steps.enumerated() { say("  \(i + 1). \(s.name): \(s.what)") }
            return .dryRun
        }

        // One procedure at a time, carried out by one session: a second operator waits here.
        try await ProcedureSteps.lock(mart, site: survivor.name)
        defer { Task { try? await mart.query("SELECT pg_advisory_unlock(hashtext('bcpipe procedure'))") } }

        let state = try await ControlState.load(mart)
        if let p = state.procedure, p.kind == "dr declare", p.target == failedSite, p.status == "done",
            state.retiredSites.contains(failedSite)
        {
            let message =
                "already done: \(failedSite) was declared failed by \(p.startedBy) at \(p.startedAt) (epoch \(p.epochTo)); phase \(state.phase)"
            say(message)
            return .alreadyDone(message)
        }
        let runner = ProcedureSteps(
            mart: mart, kind: "dr declare", target: failedSite, actor: actor, steps: Self.steps, say: say)
        let (failedName, survivorName, epochNow, who) = (failedSite, survivor.name, state.epoch, actor)
        let epochTo = Epochs.next(after: state.epoch, at: survivor.name, topology)
        let procedure = try await runner.begin(state) {
            if let fenced = state.fencedReason {
                throw SafetyRefusal(
                    rule: "survivor-not-fenced", message: "\(survivorName)'s mart is fenced: \(fenced)",
                    remedy: "a fenced site was itself declared failed; it comes back with rtn start, not dr declare")
            }
            guard state.phase == "normal" else {
                throw SafetyRefusal(
                    rule: "phase", message: "the deployment is in phase \(state.phase), not normal",
                    remedy: "a site can be declared failed from normal operation; return to normal first")
            }
            // What guarded the declaration is journaled with it (--without-witness above all).
            return try await mart.transaction { c in
                let id = try await c.query(
                    """
                    INSERT INTO control.procedure (kind, target, args, epoch_from, epoch_to, started_by)
                    VALUES ('dr declare', $1, jsonb_build_object('survivor', $2::text, 'guard', $6::text),
                            $3::bigint, $5::bigint, $4) RETURNING id
                    """, [failedName, survivorName, epochNow, who, epochTo, safeguard.rawValue]
                )[0].decode(0, as: Int64.self)
                try await c.query(
                    """
                    INSERT INTO control.journal (epoch, actor, procedure, step, status, detail)
                    VALUES ($1, $2, $3, 'safety-check', $4, jsonb_build_object('found', $5::text))
                    """, [epochTo, who, "dr declare \(failedName)", safeguard.rawValue, partitionCheck])
                return id
            }
        }
        let epoch = procedure.epochTo
        try await runner.run(procedure) { step in
            try await perform(step, mart: mart, survivor: survivor, epoch: epoch)
        }
        say("disaster recovery done: epoch \(epoch), reporting mart \(survivor.name)/mart, phase emergency")
        return .done(epoch: epoch)
    }

    /// One step's work, idempotent. Returns the journal detail (JSON).
    func perform(_ step: String, mart: PostgresConnection, survivor: Topology.Site, epoch: Int64) async throws
        -> String
    {
        let failedSources = topology.sources.filter { $0.site == failedSite }.map(\.name)
        let failedIDBs = topology.collectors.filter { $0.idb.site == failedSite }.map {
            "\($0.idb.site)/\($0.idb.database)"
        }
        switch step {
        case "raise-epoch":
            // Waits for an extractor cycle in flight (it holds the row FOR SHARE): after this, no
            // cycle of the old epoch commits.
            try await mart.query(
                "UPDATE control.deployment SET epoch = GREATEST(epoch, $1), phase = 'disaster-recovery', updated_at = now()",
                [epoch])
            return #"{"epoch": \#(epoch)}"#
        case "fence":
            var written: [String] = []
            for c in topology.collectors where c.idb.site == survivor.name {
                var config = PostgresConfiguration(conninfo: survivor.postgres, database: c.idb.database)
                config.connectTimeout = 5
                let idb = try await PostgresConnection.connect(config)
                try await idb.query(
                    "INSERT INTO idb.fence (failed_site, epoch, declared_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [failedSite, epoch, actor])
                await idb.close()
                written.append("\(c.idb.site)/\(c.idb.database)")
            }
            return #"{"idbs": "\#(written.joined(separator: ","))"}"#
        case "retire":
            let site = failedSite
            try await mart.transaction { c in
                try await c.query(
                    "INSERT INTO control.retired (kind, name, epoch) VALUES ('site', $1, $2) ON CONFLICT DO NOTHING",
                    [site, epoch])
                for s in failedSources {
                    try await c.query(
                        "INSERT INTO control.retired (kind, name, epoch) VALUES ('source', $1, $2) ON CONFLICT DO NOTHING",
                        [s, epoch])
                    try await c.query(
                        """
                        INSERT INTO control.source_state (source, site, state) VALUES ($1, $2, 'retired')
                        ON CONFLICT (source) DO UPDATE SET state = 'retired', updated_at = now()
                        """, [s, site])
                }
                for i in failedIDBs {
                    try await c.query(
                        "INSERT INTO control.retired (kind, name, epoch) VALUES ('idb', $1, $2) ON CONFLICT DO NOTHING",
                        [i, epoch])
                }
            }
            return
                #"{"sources": "\#(failedSources.joined(separator: ","))", "idbs": "\#(failedIDBs.joined(separator: ","))"}"#
        case "promote":
            // A standby stops subscribing to the failed active (its slot there is gone with it)
            // and takes over the sequences replication did not carry.
            var rebuilt = false
            if try await Replication.subscriptionExists(mart, site: survivor.name),
                try await !Replication.isSynchronised(mart, site: survivor.name)
            {
                // Promoted before its initial copy finished: what it holds is not one consistent
                // state, so it starts over from the surviving IDBs (the merge takes each event once).
                try await Replication.detach(mart, site: survivor.name)
                try await mart.execute("TRUNCATE \(Replication.tables.joined(separator: ", "))")
                for source in failedSources {  // the retire step's mark on them went with the truncation
                    try await mart.query(
                        "INSERT INTO control.source_state (source, site, state) VALUES ($1, $2, 'retired') ON CONFLICT (source) DO UPDATE SET state = 'retired'",
                        [source, failedSite])
                }
                rebuilt = true
            }
            try await Replication.detach(mart, site: survivor.name)
            try await Replication.fixSequences(mart)
            if rebuilt {
                say("    the standby had not finished its initial copy: its mart is rebuilt from the surviving IDBs")
            }
            try await mart.query(
                "UPDATE control.deployment SET role = 'active', reporting_site = $1, updated_at = now()",
                [survivor.name])
            return #"{"reporting_site": "\#(survivor.name)"}"#
        case "emergency":
            try await mart.query("UPDATE control.deployment SET phase = 'emergency', updated_at = now()")
            return #"{"phase": "emergency"}"#
        default:
            throw ControlError("unknown step \(step)")
        }
    }

    /// The partition rule (CONTRACT 6.4): the failed site is looked at from here and asked about
    /// at every witness, all at once; `PartitionCheck` decides. Returns what guarded the
    /// declaration and a line saying what was found, or throws the refusal.
    func checkNotPartitioned() async throws -> (PartitionCheck.Guard, String) {
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
        switch PartitionCheck.decide(observations) {
        case .refuse(let refusal): throw refusal
        case .proceed(let safeguard, let found): return (safeguard, found)
        }
    }
}
