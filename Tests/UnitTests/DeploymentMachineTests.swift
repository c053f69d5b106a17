import Control
import Testing
import Topology

/// The production control-plane machine on hand-picked states: the rules each command applies
/// before it touches anything, and what each step writes. (EpochModelTests walks it at random.)
@Suite("Deployment machine")
struct DeploymentMachineTests {
    static func machine(_ marts: [ControlState], mode: Topology.Mode = .activeStandby) -> DeploymentMachine {
        DeploymentMachine(
            topology: EpochModelTests.topology(mode),
            marts: Dictionary(uniqueKeysWithValues: marts.map { ($0.site!, $0) }))
    }

    static func normal(_ site: String, role: Role, epoch: Int64 = 1) -> ControlState {
        ControlState(site: site, epoch: epoch, mode: .activeStandby, role: role, reportingSite: "site1")
    }

    /// Catches a switch-over resumed after its target was promoted by a declaration made during
    /// a partition: it would raise the target to an epoch of the other site's and let both
    /// write under it (the walk of seed 110 found it before the rule existed).
    @Test func aSwitchOverIsNotResumedOnceItsTargetMovedOn() {
        var site1 = Self.normal("site1", role: .active)
        site1.procedure = .init(id: 1, kind: .switchover, target: "site2", status: .running, epochTo: 3)
        var site2 = Self.normal("site2", role: .active, epoch: 2)
        site2.phase = .emergency
        site2.reportingSite = "site2"
        var m = Self.machine([site1, site2])
        guard case .refuse(let e as SafetyRefusal) = m.decide(.switchOver(to: "site2", targetInSync: false)) else {
            Issue.record("the resumed switch-over was not refused")
            return
        }
        #expect(e.rule == "target-in-service")
    }

    /// Catches the rules of a declaration applied out of order: without --confirm-site-down
    /// nothing is read; a site answering from here is a partition; outside phase normal refused.
    @Test func aDeclarationChecksItsRulesFirst() throws {
        let m0 = Self.machine([])
        #expect(throws: SafetyRefusal.self) { try m0.journalSite(for: .declare(failed: "site1", confirmed: false)) }
        #expect(throws: TopologyError.self) { try m0.journalSite(for: .declare(failed: "site9", confirmed: true)) }

        var survivor = Self.normal("site2", role: .standby)
        var m = Self.machine([survivor])
        m.partitionChecked(.refuse(SafetyRefusal(rule: "partition", message: "answers", remedy: "-")))
        guard case .refuse(let r as SafetyRefusal) = m.decide(.declare(failed: "site1", confirmed: true)) else {
            Issue.record("a partition was not refused")
            return
        }
        #expect(r.rule == "partition")

        survivor.phase = .emergency
        m = Self.machine([survivor])
        m.partitionChecked(.proceed(.noWitnessConfigured, "-"))
        guard case .refuse(let p as SafetyRefusal) = m.decide(.declare(failed: "site1", confirmed: true)) else {
            Issue.record("a declaration outside phase normal was not refused")
            return
        }
        #expect(p.rule == "phase")
    }

    /// Catches a declaration raising an epoch the other site owns, or its steps reordered.
    @Test func aDeclarationRaisesTheSurvivorsOwnEpochAndRetiresBeforePromoting() {
        var m = Self.machine([Self.normal("site2", role: .standby)])
        m.partitionChecked(.proceed(.noWitnessConfigured, "-"))
        guard case .begin(let plan) = m.decide(.declare(failed: "site1", confirmed: true)) else {
            Issue.record("not begun")
            return
        }
        #expect(plan.epochTo == 2 && plan.journal == "site2")
        #expect(plan.steps == [.raiseEpoch, .fence, .retire, .promote, .emergency])
        #expect(m.next() == .perform(.raiseEpoch, [.raiseEpoch(site: "site2", epoch: 2, phase: .disasterRecovery)]))
    }

    /// Catches `normal` declared in active-standby before the standby replayed the re-admission
    /// (CI saw `bcpipe status` call the returned site retired right after the command said done).
    @Test func returnToNormalWaitsForTheStandbyBeforeNormal() {
        var active = Self.normal("site2", role: .active, epoch: 2)
        active.phase = .emergency
        active.reportingSite = "site2"
        active.retiredSites = ["site1"]
        var m = Self.machine([active])
        guard case .begin(let plan) = m.decide(.returnToNormal(site: "site1", active: "site2")) else {
            Issue.record("not begun")
            return
        }
        #expect(plan.admitted == 4 && plan.epochTo == 4)
        for step in plan.steps.dropLast() { m.stepDone(step) }
        #expect(
            m.next()
                == .perform(
                    .normal,
                    [
                        .releasePurges(site: "site2", returning: "site1"),
                        .awaitReadmission(site: "site1", returning: "site1"), .setPhase(site: "site2", .normal),
                        .setPhase(site: "site1", .normal),
                    ]))
    }

    /// Catches the extractor's commit rule loosened: a cycle begun under one epoch or role, or
    /// fenced since, commits nothing; an IDB fence past the mart's epoch stops it.
    @Test func theExtractorCommitsOnlyUnderTheStampItBeganWith() {
        let started = CycleStamp(epoch: 3, role: .active, fencedReason: nil)
        #expect(DeploymentMachine.mayCommit(started: started, now: started))
        #expect(
            !DeploymentMachine.mayCommit(started: started, now: CycleStamp(epoch: 5, role: .active, fencedReason: nil)))
        #expect(
            !DeploymentMachine.mayCommit(started: started, now: CycleStamp(epoch: 3, role: .standby, fencedReason: nil))
        )
        #expect(
            !DeploymentMachine.mayCommit(started: started, now: CycleStamp(epoch: 3, role: .active, fencedReason: "x")))
        #expect(!DeploymentMachine.mayCommit(started: started, now: nil))
        #expect(DeploymentMachine.cycle(started, idbFence: 3, site: "site1") == .write)
        guard case .fenced = DeploymentMachine.cycle(started, idbFence: 4, site: "site1") else {
            Issue.record("an IDB fence past the epoch did not stop the cycle")
            return
        }
    }
}
