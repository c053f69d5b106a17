import Control
import Coordinator
import Testing
import Topology

/// Model checking of the production control plane: ``DeploymentMachine`` itself decides every
/// operator command (`dr declare`, `rtn start` with and without switch-over, `switchover`), lists
/// each step's effects, tells the coordinator when to fence its site and the extractor whether a
/// cycle may write and commit. This test is the world around it — two sites, each with a mart (its
/// `ControlState`), IDB fences and replication, which fail and come back while the WAN is cut and
/// restored — and carries the machine's effects out one at a time, interleaved with everything
/// else; commands are killed and rerun at any point (the step in progress is recomputed and redone
/// whole, as `ProcedureRun` does). Random walks over many seeds check after every action that no
/// epoch ever has two writable reporting marts, and that no two extractors ever committed
/// reporting data under the same epoch.
///
/// What the test models is only what each ``DeploymentMachine/Effect`` does to a control row (the
/// `switch` in `apply` is exhaustive: a new effect does not compile until it is modelled); the
/// decisions, the steps and their order are the production code's.
@Suite("Phase and epoch state machine (model of the production machine)")
struct EpochModelTests {
    static let names = ["site1", "site2"]

    static func topology(_ mode: Topology.Mode) -> Topology {
        let sites = names.enumerated().map {
            Topology.Site(
                name: $1, postgres: "host=127.0.0.1 port=\(5432 + $0)",
                coordinator: HostPort(host: "127.0.0.1", port: 8000 + $0))
        }
        let sources = names.map { Topology.Source(name: "\($0)/voice", site: $0) }
        let collectors = names.enumerated().flatMap { i, site in
            let other = names[1 - i]
            return [
                Topology.Collector(
                    name: "\(site)-a", source: "\(site)/voice", idb: .init(site: site, database: "idb_\(site)_a"),
                    listen: HostPort(host: "127.0.0.1", port: 9000 + 2 * i), queueDir: "/q/\(site)-a"),
                Topology.Collector(
                    name: "\(site)-b", source: "\(site)/voice", idb: .init(site: other, database: "idb_\(site)_b"),
                    listen: HostPort(host: "127.0.0.1", port: 9001 + 2 * i), queueDir: "/q/\(site)-b"),
            ]
        }
        return Topology(
            deployment: .init(name: "model", mode: mode), sites: sites, sources: sources, collectors: collectors,
            extractors: [
                .init(site: "site1", role: .active),
                .init(site: "site2", role: mode == .activeActive ? .active : .standby),
            ], baseDirectory: "/")
    }

    /// A command in progress, journaled at `journal`: the machine it consults and the effects of
    /// the step being carried out.
    struct Running {
        var machine: DeploymentMachine
        var journal: Int
        var target: Int
        var step: Step?
        var effects: [DeploymentMachine.Effect]?
        var next = 0
    }

    struct World {
        let mode: Topology.Mode
        let epochs: DeploymentMachine.EpochPolicy
        let topology: Topology
        var marts: [ControlState]
        /// Active-standby: the site whose mart each one follows by replication.
        var follows: [Int?] = [nil, nil]
        var up = [true, true]
        var linked = true
        /// fences[server][failed site]: the epoch a DR declaration fenced `failed site` at, in the
        /// IDBs of `server`.
        var fences: [[Int: Int64]] = [[:], [:]]
        var cycle: [CycleStamp?] = [nil, nil]
        var procedures: [Running?] = [nil, nil]
        /// Whether the command of the procedure journaled at a site runs (holding that mart's
        /// procedure lock) — false once it is killed or its server goes down.
        var alive = [false, false]
        /// Epoch → the sites whose extractor committed while its mart named itself reporting.
        var writes: [Int64: Set<Int>] = [:]
        /// "mode kind steps" of every procedure carried out to its end.
        var finished: Set<String> = []
        var ids: Int64 = 0
        var log: [String] = []

        init(mode: Topology.Mode, epochs: DeploymentMachine.EpochPolicy = .ballots) {
            self.mode = mode
            self.epochs = epochs
            topology = EpochModelTests.topology(mode)
            marts = [
                ControlState(site: "site1", mode: mode, role: .active, reportingSite: "site1"),
                ControlState(
                    site: "site2", mode: mode, role: mode == .activeActive ? .active : .standby, reportingSite: "site1"),
            ]
            if mode == .activeStandby { follows[1] = 0 }
        }

        func index(_ site: String) -> Int { EpochModelTests.names.firstIndex(of: site)! }
        func reach(_ a: Int, _ b: Int) -> Bool { a == b ? up[a] : up[a] && up[b] && linked }
        var running: Bool { procedures.contains { $0 != nil } }

        /// A mart as its control tables read (with whether it subscribes).
        func view(_ i: Int) -> ControlState {
            var m = marts[i]
            m.subscribed = follows[i] != nil
            return m
        }

        /// The marts the operator at `i` reaches, by site.
        func views(from i: Int) -> [String: ControlState] {
            var out: [String: ControlState] = [:]
            for j in 0..<2 where reach(i, j) { out[EpochModelTests.names[j]] = view(j) }
            return out
        }

        func writable(_ s: Int) -> Bool { up[s] && marts[s].isWritableReporting }

        /// The rule: never two writable reporting marts under one epoch, now or ever.
        func violation() -> String? {
            for (e, sites) in writes where sites.count > 1 { return "epoch \(e) had reporting writes from \(sites)" }
            if writable(0) && writable(1) && marts[0].epoch == marts[1].epoch {
                return "both marts writable and reporting at epoch \(marts[0].epoch)"
            }
            return nil
        }

        func stamp(_ s: Int) -> CycleStamp {
            CycleStamp(epoch: marts[s].epoch, role: marts[s].role, fencedReason: marts[s].fencedReason)
        }

        // MARK: the extractor and the coordinator, by the machine's rules

        mutating func extractorBegin(_ s: Int) {
            guard up[s], cycle[s] == nil,
                DeploymentMachine.cycle(stamp(s), idbFence: nil, site: EpochModelTests.names[s]) == .write
            else { return }
            cycle[s] = stamp(s)
        }

        mutating func extractorCommit(_ s: Int) {
            guard up[s], let c = cycle[s] else { return }
            cycle[s] = nil
            // The fences it reads in the IDBs it reaches, then the FOR SHARE check at commit.
            let fence = (0..<2).filter { reach(s, $0) }.compactMap { fences[$0][s] }.max()
            guard DeploymentMachine.cycle(c, idbFence: fence, site: EpochModelTests.names[s]) == .write,
                DeploymentMachine.mayCommit(started: c, now: stamp(s))
            else { return }
            if marts[s].reportingSite == EpochModelTests.names[s] { writes[c.epoch, default: []].insert(s) }
            log.append("site\(s + 1) commits at epoch \(c.epoch)")
        }

        mutating func coordinator(_ s: Int) {
            let p = 1 - s
            guard reach(s, p),
                let f = DeploymentMachine.fence(
                    site: EpochModelTests.names[s], mine: marts[s], peer: EpochModelTests.names[p], theirs: marts[p])
            else { return }
            // The statement's own condition (ControlStore.fence).
            if marts[s].epoch < f.epoch && marts[s].fencedReason == nil {
                marts[s].fencedReason = f.reason
                log.append("site\(s + 1) fenced by its coordinator")
            }
        }

        // MARK: the operators' commands

        /// `dr declare --failed-site F` run at the survivor S: the partition rule lets it through
        /// when F does not answer from there — also during a mere partition, which the tool cannot
        /// tell apart (this world has no witness).
        mutating func drDeclare(survivor s: Int) {
            let f = 1 - s
            guard up[s], procedures[s] == nil else { return }
            let command = DeploymentMachine.Command.declare(failed: EpochModelTests.names[f], confirmed: true)
            var m = DeploymentMachine(topology: topology, marts: [EpochModelTests.names[s]: view(s)], epochs: epochs)
            m.partitionChecked(
                reach(s, f)
                    ? .refuse(SafetyRefusal(rule: "partition", message: "answers", remedy: ""))
                    : .proceed(.noWitnessConfigured, "does not answer"))
            start(&m, command, operator: s)
        }

        mutating func rtnStart(site f: Int, switchOver: Bool) {
            let s = 1 - f
            // The command opens the returning mart (and, with a switch-over, reads both).
            guard up[s], reach(s, f) else { return }
            let active = switchOver ? EpochModelTests.names[f] : EpochModelTests.names[s]
            var m = DeploymentMachine(topology: topology, marts: views(from: s), epochs: epochs)
            start(&m, .returnToNormal(site: EpochModelTests.names[f], active: active), operator: s)
        }

        mutating func switchOver(to t: Int) {
            let r = 1 - t
            guard reach(r, t) else { return }
            var m = DeploymentMachine(topology: topology, marts: views(from: r), epochs: epochs)
            start(&m, .switchOver(to: EpochModelTests.names[t], targetInSync: follows[t] == r), operator: r)
        }

        /// What `ProcedureRun.run` does up to the first step: the machine decides; a new procedure
        /// is recorded in the journaling mart.
        mutating func start(_ m: inout DeploymentMachine, _ command: DeploymentMachine.Command, operator o: Int) {
            guard let site = try? m.journalSite(for: command), case let j = index(site), reach(o, j),
                procedures[j] == nil
            else { return }
            m.observed(site, view(j))
            guard case .begin(let plan) = m.decide(command) else { return }
            ids += 1
            m.recorded(id: ids)
            marts[j].procedure = ControlState.Procedure(
                id: ids, kind: plan.kind, target: plan.target, status: .running, epochTo: plan.epochTo)
            procedures[j] = Running(machine: m, journal: j, target: index(plan.target))
            alive[j] = true
            log.append("\(plan.journalName) journaled at \(site), epoch → \(plan.epochTo)")
        }

        /// The operator's command dies: the step in progress is recomputed and redone whole when rerun.
        mutating func kill(_ j: Int) {
            procedures[j]?.effects = nil
            procedures[j]?.next = 0
            alive[j] = false
        }

        /// A step that changes the other mart `t` takes its procedure lock: it waits while a
        /// command journaled at `t` runs.
        func lockable(_ t: Int, by j: Int) -> Bool { t == j || !(alive[t] && procedures[t] != nil) }

        /// The command journaled at `j` does its next piece of work (one effect).
        mutating func step(_ j: Int) {
            guard var p = procedures[j], up[j] else { return }
            alive[j] = true  // (re)run by the operator
            if p.effects == nil {
                // A step begins: the marts it holds read again, the machine asked what to do.
                p.machine.observed(EpochModelTests.names[j], view(j))
                if p.machine.plan?.kind != .drDeclare {
                    guard reach(j, p.target) else { return }
                    p.machine.observed(EpochModelTests.names[p.target], view(p.target))
                }
                switch p.machine.next() {
                case .finish:
                    marts[j].procedure?.status = .done
                    if let plan = p.machine.plan {
                        finished.insert("\(mode.rawValue) \(plan.kind.rawValue) \(plan.steps.count)")
                    }
                    procedures[j] = nil
                    return
                case .fail:
                    procedures[j] = p  // the command stops; rerunning asks again
                    return
                case .perform(let s, let effects):
                    (p.step, p.effects, p.next) = (s, effects, 0)
                }
            }
            guard let effects = p.effects, let s = p.step else { return }
            guard apply(effects[p.next], by: j) else {
                procedures[j] = p
                return
            }
            p.next += 1
            if p.next == effects.count {
                marts[j].procedure?.stepsDone.append(s)
                p.machine.stepDone(s)
                p.effects = nil
                log.append("\(p.machine.plan?.journalName ?? "?") / \(s.rawValue) done")
            }
            procedures[j] = p
        }

        /// One effect on the model's control rows; false when it cannot be done now (the mart it
        /// writes is out of reach or held by another command).
        mutating func apply(_ effect: DeploymentMachine.Effect, by j: Int) -> Bool {
            func at(_ site: String) -> Int? {
                let i = index(site)
                return reach(j, i) && lockable(i, by: j) ? i : nil
            }
            switch effect {
            case .raiseEpoch(let site, let epoch, let phase):
                guard let i = at(site) else { return false }
                marts[i].epoch = max(marts[i].epoch, epoch)
                if let phase { marts[i].phase = phase }
            case .setPhase(let site, let phase):
                guard let i = at(site) else { return false }
                marts[i].phase = phase
            case .fenceIDBs(let server, let failed, let epoch):
                guard let i = at(server) else { return false }
                fences[i][index(failed)] = epoch
            case .retire(let site, let failed, _):
                guard let i = at(site) else { return false }
                if !marts[i].retiredSites.contains(failed) { marts[i].retiredSites.append(failed) }
            case .promote(let site):
                guard let i = at(site) else { return false }
                follows[i] = nil
                marts[i].role = .active
                marts[i].reportingSite = site
            case .holdPurges(let site, _), .releasePurges(let site, _), .awaitReadmission(let site, _):
                guard at(site) != nil else { return false }
            case .prepare(let site, let epoch, let reporting):
                guard let i = at(site) else { return false }
                marts[i] = ControlState(
                    site: site, epoch: epoch, phase: .returnToNormal, mode: mode, role: .standby,
                    reportingSite: reporting)
                follows[i] = nil
                procedures[i] = nil  // its running procedures are deleted
            case .copy(let site, let from, let follow):
                guard let i = at(site), reach(j, index(from)) else { return false }
                if follow { follows[i] = index(from) }
            case .readmit(let site, let returning, let epoch, _):
                guard let i = at(site) else { return false }
                marts[i].epoch = max(marts[i].epoch, epoch)
                marts[i].retiredSites.removeAll { $0 == returning }
            case .setRole(let site, let role):
                guard let i = at(site) else { return false }
                marts[i].role = role
            case .releaseIDBFences(let failed):
                // Every other site's IDBs that answer.
                for server in 0..<2 where server != index(failed) && reach(j, server) {
                    fences[server][index(failed)] = nil
                }
            case .stopWriting(let site, let epoch):
                guard let i = at(site) else { return false }
                marts[i].role = .standby
                marts[i].epoch = max(marts[i].epoch, epoch)
            case .awaitCatchUp(let site, let from):
                // The marker arrives only through replication from `from`.
                guard let i = at(site), follows[i] == index(from), reach(i, index(from)) else { return false }
            case .stopFollowing(let site, _):
                guard let i = at(site) else { return false }
                follows[i] = nil
            case .follow(let site, let publisher):
                guard let i = at(site), at(publisher) != nil else { return false }
                follows[i] = index(publisher)
            case .activate(let site, let epoch):
                guard let i = at(site) else { return false }
                marts[i].role = .active
                marts[i].reportingSite = site
                marts[i].epoch = max(marts[i].epoch, epoch)
            case .setReporting(let site, let reporting, let epoch):
                guard let i = at(site) else { return false }
                marts[i].reportingSite = reporting
                if let epoch { marts[i].epoch = max(marts[i].epoch, epoch) }
            }
            return true
        }
    }

    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// One random walk; the first violation (with the actions that led to it), or nil.
    static func walk(
        mode: Topology.Mode, epochs: DeploymentMachine.EpochPolicy = .ballots, seed: UInt64, length: Int
    ) -> (String, [String])? {
        var w = World(mode: mode, epochs: epochs)
        var rng = SplitMix64(state: seed)
        for _ in 0..<length {
            let s = Int.random(in: 0..<2, using: &rng)
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<25: w.extractorBegin(s)
            case 25..<50: w.extractorCommit(s)
            case 50..<58: w.coordinator(s)
            case 58..<61:
                if w.up[s] {
                    w.up[s] = false
                    w.cycle[s] = nil
                    w.alive[s] = false
                    w.log.append("site\(s + 1) fails")
                }
            case 61..<65: if !w.up[s] { w.up[s] = true; w.log.append("site\(s + 1) comes back") }
            case 65..<68: if w.linked { w.linked = false; w.log.append("WAN cut") }
            case 68..<72: if !w.linked { w.linked = true; w.log.append("WAN restored") }
            case 72..<75: w.drDeclare(survivor: s)
            case 75..<78: w.rtnStart(site: s, switchOver: Bool.random(using: &rng))
            case 78..<80: w.switchOver(to: s)
            case 80..<82: w.kill(s)
            default: w.step(s)
            }
            if let v = w.violation() { return (v, w.log) }
        }
        return nil
    }

    @Test(arguments: [Topology.Mode.activeStandby, .activeActive])
    func neverTwoWritableReportingMartsPerEpoch(mode: Topology.Mode) {
        var procedures = 0
        for seed in UInt64(0)..<3000 {
            if let (violation, log) = Self.walk(mode: mode, seed: seed, length: 400) {
                Issue.record("seed \(seed): \(violation)\n  \(log.suffix(30).joined(separator: "\n  "))")
                return
            }
            procedures += 1
        }
        #expect(procedures == 3000)
    }

    /// The walks reach every procedure to its end, so the rule above is checked where it matters.
    @Test func theWalksCompleteEveryProcedure() {
        var seen: Set<String> = []
        for seed in UInt64(0)..<3000 {
            for mode in [Topology.Mode.activeStandby, .activeActive] {
                var w = World(mode: mode)
                var rng = SplitMix64(state: seed)
                for _ in 0..<400 {
                    let s = Int.random(in: 0..<2, using: &rng)
                    switch Int.random(in: 0..<10, using: &rng) {
                    case 0: w.up[s] = false
                    case 1: w.up[s] = true
                    case 2: w.linked.toggle()
                    case 3: w.drDeclare(survivor: s)
                    case 4: w.rtnStart(site: s, switchOver: Bool.random(using: &rng))
                    case 5: w.switchOver(to: s)
                    default: w.step(s)
                    }
                }
                seen.formUnion(w.finished)
            }
        }
        #expect(
            seen.isSuperset(of: [
                "active-standby dr declare 5", "active-standby rtn start 6", "active-standby rtn start 7",
                "active-standby switchover 1", "active-active dr declare 5", "active-active rtn start 6",
                "active-active switchover 1",
            ]), "\(seen.sorted())")
    }

    /// The checker finds the split brain that plain `epoch + 1` allows: operators on both sides of
    /// a partition each declare the other site failed and both raise the epoch to 2.
    @Test func withoutBallotsAPartitionGivesTwoWritersInOneEpoch() {
        var found: String?
        for seed in UInt64(0)..<3000 where found == nil {
            found = Self.walk(mode: .activeStandby, epochs: .increment, seed: seed, length: 400)?.0
        }
        #expect(found != nil, "the model should find the double declaration")
    }

    @Test func epochsAreOwnedBySite() {
        let sites = ["site1", "site2"]
        #expect(Epochs.next(after: 1, at: "site2", sites: sites) == 2)
        #expect(Epochs.next(after: 1, at: "site1", sites: sites) == 3)
        #expect(Epochs.next(after: 2, at: "site2", sites: sites) == 4)
        #expect(Epochs.next(after: 4, at: "site1", sites: sites) == 5)
        let three = ["site1", "site2", "site3"]
        #expect((1...30).map { Epochs.next(after: $0, at: "site3", sites: three) % 3 }.allSatisfy { $0 == 0 })
    }
}
