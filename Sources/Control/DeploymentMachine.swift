import Topology

/// The deployment's control plane as one pure state machine, in the style of PostgresNIO's
/// connection state machine: a value holding what was read of the marts' control rows, whose
/// `mutating` functions take an input — an operator's command, a mart read again, a step done —
/// and return what to do. It performs no I/O: `DisasterRecovery`, `ReturnToNormal` and
/// `SwitchOver` carry out its actions against the databases, and
/// `Tests/UnitTests/EpochModelTests.swift` carries them out against a model of the two sites,
/// checking over random interleavings that no epoch ever has two writable reporting marts.
///
/// Every safety rule a procedure applies before it touches anything is in ``decide(_:)``; the
/// order and content of each step's writes are in ``next()``; the coordinator's fencing and the
/// extractor's commit rule are the static functions at the end.
public struct DeploymentMachine: Sendable {
    public let topology: Topology
    /// What is known of each site's mart (those that answered).
    public private(set) var marts: [String: ControlState]
    /// The procedure being carried out, once ``decide(_:)`` began or resumed one.
    public private(set) var plan: Plan?
    /// What the partition rule (CONTRACT 6.4) decided, for a declaration.
    public private(set) var partition: PartitionCheck.Verdict?

    /// How epochs are raised. Production uses ``EpochPolicy/ballots``.
    public let epochs: EpochPolicy

    public init(topology: Topology, marts: [String: ControlState], epochs: EpochPolicy = .ballots) {
        self.topology = topology
        self.marts = marts
        self.epochs = epochs
    }

    public enum EpochPolicy: Sendable {
        /// Each site raises only to epochs it owns (``Epochs``): two operators on the two sides
        /// of a partition never raise the same one.
        case ballots
        /// Plain `epoch + 1`: what the model checker shows to give two writers one epoch during
        /// a partition (`EpochModelTests`); not for use.
        case increment
    }

    func nextEpoch(after epoch: Int64, at site: String) -> Int64 {
        switch epochs {
        case .ballots: Epochs.next(after: epoch, at: site, topology)
        case .increment: epoch + 1
        }
    }

    func previousEpoch(before epoch: Int64) -> Int64 {
        switch epochs {
        case .ballots: Epochs.previous(before: epoch, topology)
        case .increment: epoch - 1
        }
    }

    /// A procedure: what it is, where it is journaled, its steps and epochs.
    public struct Plan: Sendable, Equatable {
        public var kind: ProcedureKind
        public var target: String
        /// The site whose mart journals it (and whose epochs it raises to).
        public var journal: String
        public var steps: [Step]
        public var epochFrom: Int64
        public var epochTo: Int64
        /// `rtn start`: the epoch of the re-admission (one before `epochTo` with a switch-over).
        public var admitted: Int64
        public var id: Int64?
        public var done: [Step] = []

        public var journalName: String { "\(kind.rawValue) \(target)" }
    }

    /// An operator's command, with what it found before deciding.
    public enum Command: Sendable {
        /// `dr declare --failed-site F`: `confirmed` is `--confirm-site-down` (or a dry run).
        /// Decided once ``partitionChecked(_:)`` gave what the probes and witnesses found.
        case declare(failed: String, confirmed: Bool)
        /// `rtn start --site S --active A` (`S == A`: with a switch-over).
        case returnToNormal(site: String, active: String)
        /// `switchover --to T`; `targetInSync`: active-standby, T's mart follows the reporting one
        /// and its initial copy has finished.
        case switchOver(to: String, targetInSync: Bool)
    }

    public enum Decision: Sendable {
        case begin(Plan)
        case resume(Plan)
        case alreadyDone(String)
        /// Nothing was done: a safety rule refused (``SafetyRefusal``, exit 3), the command named
        /// what the topology does not have (``TopologyError``, exit 2), or a mart it needs did
        /// not answer (``ControlError``).
        case refuse(any Error & Sendable)
    }

    /// One write (or wait) of a step, on the mart of `site` unless it says otherwise.
    public enum Effect: Sendable, Equatable {
        /// The epoch raised to at least `epoch` (an extractor cycle in flight finishes first), and
        /// the phase if given.
        case raiseEpoch(site: String, epoch: Int64, phase: Phase?)
        case setPhase(site: String, Phase)
        /// In the IDBs served at `server`: the fence against `failed`'s extractor at `epoch`.
        case fenceIDBs(server: String, failed: String, epoch: Int64)
        /// `failed`, its sources and IDBs retired at `epoch`.
        case retire(site: String, failed: String, epoch: Int64)
        /// Stops following the failed active, takes over the sequences, becomes the active and
        /// the reporting mart.
        case promote(site: String)
        case holdPurges(site: String, returning: String)
        case releasePurges(site: String, returning: String)
        /// The returning mart rewritten as a standby at `epoch` of the deployment reported by
        /// `reporting`; its old procedures and retired set forgotten.
        case prepare(site: String, epoch: Int64, reporting: String)
        /// The consistent copy of `from`'s mart into `site`'s, then (`follow`) replication from
        /// the same slot.
        case copy(site: String, from: String, follow: Bool)
        /// `returning` re-admitted at `epoch`; `extracting`: this mart's extractor reads its
        /// IDBs again from the start.
        case readmit(site: String, returning: String, epoch: Int64, extracting: Bool)
        case setRole(site: String, Role)
        /// The fences against `failed` in every other site's IDBs released.
        case releaseIDBFences(failed: String)
        /// Waits until the standby `site` has replayed `returning`'s re-admission.
        case awaitReadmission(site: String, returning: String)
        /// Switch-over: the active stops writing (role standby at `epoch`).
        case stopWriting(site: String, epoch: Int64)
        /// Switch-over: waits until `site` (following `from`) holds everything `from` wrote.
        case awaitCatchUp(site: String, from: String)
        /// Switch-over: `site` stops following `publisher` (its slot there dropped).
        case stopFollowing(site: String, publisher: String)
        /// `site` follows `publisher` from here without a copy (both hold the same rows); the
        /// publisher takes over the sequences first.
        case follow(site: String, publisher: String)
        /// Role active and the reporting mart at `epoch`.
        case activate(site: String, epoch: Int64)
        /// The reporting mart named `reporting` here (at `epoch` or later when given).
        case setReporting(site: String, reporting: String, epoch: Int64?)
    }

    public enum Action: Sendable, Equatable {
        /// Carry out `effects` in order, then report ``stepDone(_:)``; rerun whole if interrupted.
        case perform(Step, [Effect])
        /// The step cannot be done from what the marts hold (nothing was changed).
        case fail(Step, String)
        /// Every step is done: mark the procedure done.
        case finish
    }

    // MARK: inputs

    /// The partition rule's verdict on a declaration (``PartitionCheck/decide(_:)``).
    public mutating func partitionChecked(_ verdict: PartitionCheck.Verdict) {
        partition = verdict
    }

    /// A mart read again (before a step, after taking its lock).
    public mutating func observed(_ site: String, _ state: ControlState) {
        marts[site] = state
    }

    /// A mart that did not answer: nothing is known of it.
    public mutating func unreachable(_ site: String) {
        marts[site] = nil
    }

    /// The site whose mart journals `command`: the survivor for a declaration, the active for a
    /// return to normal (the mart that reports now, with a switch-over), the mart holding a
    /// switch-over in progress or else the reporting one.
    public func journalSite(for command: Command) throws -> String {
        switch command {
        case .declare(let failed, let confirmed):
            let survivor = try survivor(of: failed)
            guard confirmed else {
                throw SafetyRefusal(
                    rule: "confirm-site-down", message: "declaring \(failed) failed needs --confirm-site-down",
                    remedy:
                        "confirm by other means (people at the site, the provider) that \(failed) is down — not just unreachable — and add --confirm-site-down"
                )
            }
            return survivor
        case .returnToNormal(let site, let active):
            try checkReturn(site: site, active: active)
            if site != active { return active }
            guard let r = reportingSite else { throw Self.unreachable("a reporting mart (the copy's source)") }
            return r
        case .switchOver(let to, _):
            try checkKnown(to, flag: "--to")
            try checkHasMart(to, rule: "target-has-a-mart", remedy: "switch over to a site that has a mart")
            if let (site, _) = marts.first(where: { $0.value.running?.kind == .switchover }) { return site }
            guard let r = reportingSite else { throw Self.unreachable("the reporting mart") }
            return r
        }
    }

    /// Every safety rule of `command`, against the journaling mart as read under its lock; the
    /// procedure to begin or resume. A refusal changes nothing.
    public mutating func decide(_ command: Command) -> Decision {
        do {
            let journal = try journalSite(for: command)
            guard let state = marts[journal] else { throw Self.unreachable("\(journal)'s mart") }
            let decision: Decision
            switch command {
            case .declare(let failed, _):
                guard let partition else {
                    throw ControlError(.inconsistent, "the partition check has not run before the declaration")
                }
                decision = try decideDeclare(failed, partition: partition, journal, state)
            case .returnToNormal(let site, let active):
                decision = try decideReturn(site, active: active, journal, state)
            case .switchOver(let to, let inSync):
                decision = try decideSwitchOver(to, inSync: inSync, journal, state)
            }
            switch decision {
            case .begin(let p), .resume(let p): plan = p
            default: break
            }
            return decision
        } catch {
            return .refuse(error)
        }
    }

    /// The procedure's row was written (its id).
    public mutating func recorded(id: Int64) { plan?.id = id }

    /// The next step to carry out, with its writes as the marts stand now.
    public func next() -> Action {
        guard let p = plan else { return .finish }
        guard let step = p.steps.first(where: { !p.done.contains($0) }) else { return .finish }
        return effects(of: step, p)
    }

    public mutating func stepDone(_ step: Step) {
        plan?.done.append(step)
    }

    // MARK: the rules

    func decideDeclare(
        _ failed: String, partition: PartitionCheck.Verdict, _ survivor: String,
        _ state: ControlState
    ) throws -> Decision {
        if let refusal = partition.refusal { throw refusal }
        if let p = state.procedure, p.kind == .drDeclare, p.target == failed, p.status == .done,
            state.retiredSites.contains(failed)
        {
            return .alreadyDone(
                "already done: \(failed) was declared failed by \(p.startedBy) at \(p.startedAt) (epoch \(p.epochTo)); phase \(state.phase.rawValue)"
            )
        }
        if let p = try running(.drDeclare, failed, state) {
            return resumed(p, journal: survivor, steps: Self.declareSteps, admitted: p.epochTo, state)
        }
        if let fenced = state.fencedReason {
            throw SafetyRefusal(
                rule: "survivor-not-fenced", message: "\(survivor)'s mart is fenced: \(fenced)",
                remedy: "a fenced site was itself declared failed; it comes back with rtn start, not dr declare")
        }
        guard state.phase == .normal else {
            throw SafetyRefusal(
                rule: "phase", message: "the deployment is in phase \(state.phase.rawValue), not normal",
                remedy: "a site can be declared failed from normal operation; return to normal first")
        }
        let e = nextEpoch(after: state.epoch, at: survivor)
        return .begin(
            Plan(
                kind: .drDeclare, target: failed, journal: survivor, steps: Self.declareSteps, epochFrom: state.epoch,
                epochTo: e, admitted: e))
    }

    func decideReturn(_ site: String, active: String, _ journal: String, _ state: ControlState) throws
        -> Decision
    {
        let switchOver = site == active
        if switchOver && journal == site {
            // Done before: the returning site reports already.
            if state.phase == .normal, state.role == .active {
                return .alreadyDone(
                    "already done: \(site) is the active site and reports; phase normal, epoch \(state.epoch)")
            }
            throw SafetyRefusal(
                rule: "phase", message: "\(site)'s mart reports but is in phase \(state.phase.rawValue)",
                remedy: "see bcpipe status")
        }
        guard state.reportingSite == journal, state.fencedReason == nil else {
            throw SafetyRefusal(
                rule: "active-is-the-reporting-mart",
                message:
                    "\(journal)'s mart is not the reporting mart (it names \(state.reportingSite ?? "none")\(state.fencedReason.map { "; fenced: \($0)" } ?? ""))",
                remedy: "pass --active with the site whose mart reports now (see bcpipe status)")
        }
        let steps = Self.returnSteps(switchOver: switchOver)
        if let p = try running(.rtnStart, site, state) {
            let admitted = switchOver ? previousEpoch(before: p.epochTo) : p.epochTo
            return resumed(p, journal: journal, steps: steps, admitted: admitted, state)
        }
        guard state.phase == .emergency else {
            if state.phase == .normal, let p = state.procedure, p.kind == .rtnStart, p.target == site {
                return .alreadyDone("already done: \(site) returned by \(p.startedBy) at \(p.startedAt); phase normal")
            }
            throw SafetyRefusal(
                rule: "phase", message: "the deployment is in phase \(state.phase.rawValue), not emergency",
                remedy: "return to normal follows disaster recovery (bcpipe dr declare)")
        }
        // Re-admission is one new epoch; the switch-over that follows it (moving the writer) another.
        let admitted = nextEpoch(after: state.epoch, at: journal)
        let epochTo = switchOver ? nextEpoch(after: admitted, at: journal) : admitted
        return .begin(
            Plan(
                kind: .rtnStart, target: site, journal: journal, steps: steps,
                epochFrom: state.epoch, epochTo: epochTo, admitted: admitted))
    }

    func decideSwitchOver(_ to: String, inSync: Bool, _ journal: String, _ state: ControlState) throws
        -> Decision
    {
        let steps = Self.switchOverSteps(mode: mode)
        if let p = try running(.switchover, to, state) {
            if let moved = movedOn(to, epochTo: p.epochTo) {
                throw SafetyRefusal(
                    rule: "target-in-service", message: moved,
                    remedy:
                        "the switch-over cannot finish: see bcpipe status; the deployment goes on with the procedure that moved it"
                )
            }
            return resumed(p, journal: journal, steps: steps, admitted: p.epochTo, state)
        }
        if journal == to {
            return .alreadyDone(
                "already done: \(to)/mart is the reporting mart; phase \(state.phase.rawValue), epoch \(state.epoch)")
        }
        guard state.phase == .normal else {
            throw SafetyRefusal(
                rule: "phase", message: "the deployment is in phase \(state.phase.rawValue), not normal",
                remedy: "a planned switch-over runs in normal operation; after a disaster use rtn start --active \(to)")
        }
        guard let other = marts[to] else { throw Self.unreachable("\(to)'s mart (a switch-over needs both sites)") }
        guard other.fencedReason == nil, other.phase == .normal, other.epoch == state.epoch else {
            throw SafetyRefusal(
                rule: "target-in-service",
                message:
                    "\(to)'s mart is not in service with \(journal) (phase \(other.phase.rawValue), epoch \(other.epoch) vs \(state.epoch)\(other.fencedReason.map { "; fenced: \($0)" } ?? ""))",
                remedy: "bring it back with rtn start first")
        }
        if mode == .activeStandby && !inSync {
            throw SafetyRefusal(
                rule: "standby-in-sync",
                message: "\(to)'s mart does not follow \(journal)'s yet (its initial copy has not finished)",
                remedy: "wait until bcpipe status shows its replication streaming, then run this again")
        }
        let e = nextEpoch(after: state.epoch, at: journal)
        return .begin(
            Plan(
                kind: .switchover, target: to, journal: journal, steps: steps,
                epochFrom: state.epoch, epochTo: e, admitted: e))
    }

    /// The running procedure of `state` when it is this one (resumed by running the command
    /// again); another running procedure is refused.
    func running(_ kind: ProcedureKind, _ target: String, _ state: ControlState) throws
        -> ControlState.Procedure?
    {
        guard let p = state.running else { return nil }
        guard p.kind == kind, p.target == target else {
            throw SafetyRefusal(
                rule: "one-procedure-at-a-time",
                message:
                    "\(p.kind.rawValue) \(p.target) (started by \(p.startedBy) at \(p.startedAt)) is still in progress",
                remedy: "finish it first (run it again to resume); see bcpipe status")
        }
        return p
    }

    /// Why the target of a switch-over in progress can no longer take the reporting role from
    /// it: another procedure (a declaration during a partition) moved it on meanwhile — it is out
    /// of phase normal, fenced, or past the switch-over's epoch. Nil while it can.
    func movedOn(_ target: String, epochTo: Int64) -> String? {
        guard let t = marts[target] else { return nil }
        guard t.phase == .normal, t.fencedReason == nil, t.epoch <= epochTo else {
            return
                "\(target)'s mart moved on while the switch-over to it was in progress (phase \(t.phase.rawValue), epoch \(t.epoch)\(t.fencedReason.map { "; fenced: \($0)" } ?? ""))"
        }
        return nil
    }

    func resumed(_ p: ControlState.Procedure, journal: String, steps: [Step], admitted: Int64, _ state: ControlState)
        -> Decision
    {
        .resume(
            Plan(
                kind: p.kind, target: p.target, journal: journal, steps: steps, epochFrom: state.epoch,
                epochTo: p.epochTo, admitted: admitted, id: p.id, done: p.stepsDone))
    }

    // MARK: steps

    public static let declareSteps: [Step] = [.raiseEpoch, .fence, .retire, .promote, .emergency]

    /// `rtn start`'s steps; with a switch-over (active-standby, `--active` the returning site) one more.
    public static func returnSteps(switchOver: Bool) -> [Step] {
        [.purgeHold, .returnToNormal, .prepare, .copy, .readmit] + (switchOver ? [.switchOver] : []) + [.normal]
    }

    public static func switchOverSteps(mode: Topology.Mode) -> [Step] {
        mode == .activeStandby ? [.switchOver] : [.moveReporting]
    }

    var mode: Topology.Mode { topology.deployment.mode }

    /// One step's writes, computed from the marts as they stand (a rerun after a kill computes
    /// them again and goes on from wherever the last run stopped: every effect is idempotent).
    func effects(of step: Step, _ p: Plan) -> Action {
        let (s, t, e) = (p.journal, p.target, p.epochTo)
        let activeActive = mode == .activeActive
        if p.kind == .switchover, let moved = movedOn(t, epochTo: e) { return .fail(step, moved) }
        switch step {
        case .raiseEpoch: return .perform(step, [.raiseEpoch(site: s, epoch: e, phase: .disasterRecovery)])
        case .fence: return .perform(step, [.fenceIDBs(server: s, failed: t, epoch: e)])
        case .retire: return .perform(step, [.retire(site: s, failed: t, epoch: e)])
        case .promote: return .perform(step, [.promote(site: s)])
        case .emergency: return .perform(step, [.setPhase(site: s, .emergency)])
        case .purgeHold: return .perform(step, [.holdPurges(site: s, returning: t)])
        case .returnToNormal: return .perform(step, [.setPhase(site: s, .returnToNormal)])
        case .prepare: return .perform(step, [.prepare(site: t, epoch: p.admitted, reporting: s)])
        case .copy: return .perform(step, [.copy(site: t, from: s, follow: !activeActive)])
        case .readmit:
            return .perform(
                step,
                [
                    .readmit(site: s, returning: t, epoch: p.admitted, extracting: true),
                    .readmit(site: t, returning: t, epoch: p.admitted, extracting: activeActive),
                    .setRole(site: t, activeActive ? .active : .standby), .releaseIDBFences(failed: t),
                ])
        case .switchOver:
            // The old active `s` hands the writer to `t` (which follows it).
            guard marts[t] != nil else {
                return .fail(step, "\(t)'s mart does not answer; run this again when it does")
            }
            var effects: [Effect] = []
            if marts[t]?.subscribed == true {
                effects = [
                    .stopWriting(site: s, epoch: e), .awaitCatchUp(site: t, from: s),
                    .stopFollowing(site: t, publisher: s),
                ]
            } else if marts[s]?.role == .active && marts[t]?.role != .active {
                return .fail(
                    step,
                    "\(t)'s mart does not follow \(s)'s and is not the active one: nothing proves it holds everything; see bcpipe status"
                )
            }
            effects += [
                .follow(site: s, publisher: t), .activate(site: t, epoch: e),
                .setReporting(site: s, reporting: t, epoch: nil),
            ]
            return .perform(step, effects)
        case .moveReporting:
            return .perform(
                step, [.setReporting(site: t, reporting: t, epoch: e), .setReporting(site: s, reporting: t, epoch: e)])
        case .normal:
            // The hold is released where the replicated tables are written now (the new active
            // after a switch-over); a standby has replayed the re-admission before `normal`.
            let writer = p.steps.contains(.switchOver) ? t : s
            var effects: [Effect] = [.releasePurges(site: writer, returning: t)]
            if !activeActive { effects.append(.awaitReadmission(site: writer == s ? t : s, returning: t)) }
            return .perform(step, effects + [.setPhase(site: s, .normal), .setPhase(site: t, .normal)])
        }
    }

    // MARK: topology rules

    /// The survivor of `failed`: the first other site with an extractor.
    public func survivor(of failed: String) throws -> String {
        try checkKnown(failed, flag: "--failed-site")
        guard let e = topology.extractors.first(where: { $0.site != failed }) else {
            throw SafetyRefusal(
                rule: "survivor", message: "no other site with an extractor survives \(failed)",
                remedy: "a deployment needs a second site to recover onto")
        }
        return e.site
    }

    func checkReturn(site: String, active: String) throws {
        try checkKnown(site, flag: "--site")
        try checkKnown(active, flag: "--active")
        try checkHasMart(
            site, rule: "returning-site-has-a-mart",
            remedy: "add `- { site: \(site), role: standby }` under extractors in the topology file")
        if site == active && mode == .activeActive {
            throw SafetyRefusal(
                rule: "switch-over", message: "active-active has no switch-over: every site's mart is active",
                remedy: "pass --active with the site whose mart reports now")
        }
    }

    func checkKnown(_ site: String, flag: String) throws {
        guard topology.site(named: site) == nil else { return }
        throw TopologyError(
            path: flag,
            message: "unknown site \"\(site)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
    }

    func checkHasMart(_ site: String, rule: String, remedy: String) throws {
        guard topology.extractors.contains(where: { $0.site == site }) else {
            throw SafetyRefusal(
                rule: rule, message: "site \(site) has no extractor (and so no mart) in the topology", remedy: remedy)
        }
    }

    static func unreachable(_ what: String) -> ControlError {
        ControlError(.unreachable, "\(what) does not answer; see bcpipe status, and run this again when it answers")
    }

    /// The reporting site as the marts say it: the one named by the highest-epoch mart that is not
    /// fenced (the topology's active extractor when no mart answered).
    public var reportingSite: String? {
        let best = marts.values.filter { $0.fencedReason == nil }.max { $0.epoch < $1.epoch }
        return best?.reportingSite ?? topology.extractors.first { $0.role == .active }?.site
    }
}

// MARK: the coordinator's and the extractor's rules

/// The control row as an extractor cycle sees it.
public struct CycleStamp: Sendable, Equatable {
    public var epoch: Int64
    public var role: Role?
    public var fencedReason: String?

    public init(epoch: Int64, role: Role?, fencedReason: String?) {
        self.epoch = epoch
        self.role = role
        self.fencedReason = fencedReason
    }
}

extension DeploymentMachine {
    /// The coordinator's fencing rule: a peer that retired this site at a later epoch fences it.
    /// The reason to write, and the epoch it is fenced at; nil when nothing changes.
    public static func fence(site: String, mine: ControlState, peer: String, theirs: ControlState)
        -> (reason: String, epoch: Int64)?
    {
        guard theirs.epoch > mine.epoch, theirs.retiredSites.contains(site), mine.fencedReason == nil else {
            return nil
        }
        return (
            "\(peer) declared \(site) failed at epoch \(theirs.epoch) (this site holds epoch \(mine.epoch)); nothing here writes until return to normal re-admits \(site)",
            theirs.epoch
        )
    }

    /// What an extractor cycle may do, from its mart's row and the highest fence against its site
    /// in the IDBs it read.
    public enum CycleVerdict: Sendable, Equatable {
        case write
        case standby
        case fenced(String)
    }

    public static func cycle(_ stamp: CycleStamp, idbFence: Int64?, site: String) -> CycleVerdict {
        if let reason = stamp.fencedReason { return .fenced(reason) }
        if let fence = idbFence, fence > stamp.epoch {
            return .fenced(
                "a surviving site declared \(site) failed at epoch \(fence) (this mart holds epoch \(stamp.epoch)); return to normal re-admits it"
            )
        }
        return stamp.role == .active ? .write : .standby
    }

    /// The commit rule: a cycle commits only under the epoch and role it started with, unfenced
    /// (the row is read `FOR SHARE` in the cycle's transaction, so no step changes it meanwhile).
    public static func mayCommit(started: CycleStamp, now: CycleStamp?) -> Bool {
        guard let now else { return false }
        return now.epoch == started.epoch && now.role == started.role && now.fencedReason == nil
    }
}
