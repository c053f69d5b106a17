import Coordinator
import Testing
import Topology

/// A model of the deployment's phase and epoch state machine: two sites, each with a mart (its
/// control row), an extractor whose cycles begin under one (epoch, role) and commit only if the
/// row still says the same (the `FOR SHARE` check) and no readable IDB fences it at a later epoch,
/// a coordinator that fences its site when a peer retired it at a later epoch, and the operators'
/// procedures — `dr declare`, `rtn start` (with and without switch-over) and `switchover` — whose
/// steps are the code's own step lists, run one at a time, killed and resumed at any point, while
/// sites fail and come back and the WAN is cut and restored. Random walks over many seeds check
/// after every action that no epoch ever has two writable reporting marts, and that no two
/// extractors ever committed reporting data under the same epoch.
///
/// The model mirrors what each step does to the control rows (`Sources/Coordinator`); a step name
/// the model does not know fails the test, so a new step must be modelled before it ships.
@Suite("Phase and epoch state machine (model)")
struct EpochModelTests {
    enum Role: Hashable { case active, standby }

    struct Mart: Hashable {
        var epoch: Int64 = 1
        var role: Role
        var phase = "normal"
        var reporting = 0
        var fenced = false
        var retired: Set<Int> = []
        /// Active-standby: the site whose mart this one follows by replication.
        var follows: Int?
    }

    struct Procedure {
        var kind: String
        var site: Int  // the mart that journals it
        var target: Int
        var steps: [String]
        var done = 0
        var substep = 0
        var epochTo: Int64
        var admitted: Int64
    }

    struct World {
        let mode: Topology.Mode
        let ballots: Bool
        var marts: [Mart]
        var up = [true, true]
        var linked = true
        /// fences[server][failed site]: the epoch a DR declaration fenced `failed site` at, in the
        /// IDBs of `server`.
        var fences: [[Int: Int64]] = [[:], [:]]
        var cycle: [(epoch: Int64, role: Role)?] = [nil, nil]
        var procedures: [Procedure?] = [nil, nil]
        /// Whether the command of the procedure journaled at a site runs (holding that mart's
        /// procedure lock) — false once it is killed or its server goes down.
        var alive = [false, false]
        /// Epoch → the sites whose extractor committed while its mart named itself reporting.
        var writes: [Int64: Set<Int>] = [:]
        var log: [String] = []

        init(mode: Topology.Mode, ballots: Bool) {
            self.mode = mode
            self.ballots = ballots
            marts = [Mart(role: .active), Mart(role: mode == .activeActive ? .active : .standby)]
            if mode == .activeStandby { marts[1].follows = 0 }
        }

        static let names = ["site1", "site2"]
        func reach(_ a: Int, _ b: Int) -> Bool { a == b ? up[a] : up[a] && up[b] && linked }
        func next(after e: Int64, at s: Int) -> Int64 {
            ballots ? Epochs.next(after: e, at: Self.names[s], sites: Self.names) : e + 1
        }
        var running: Bool { procedures.contains { $0 != nil } }

        func writable(_ s: Int) -> Bool {
            up[s] && !marts[s].fenced && marts[s].role == .active && marts[s].reporting == s
        }

        /// The rule: never two writable reporting marts under one epoch, now or ever.
        func violation() -> String? {
            for (e, sites) in writes where sites.count > 1 { return "epoch \(e) had reporting writes from \(sites)" }
            if writable(0) && writable(1) && marts[0].epoch == marts[1].epoch {
                return "both marts writable and reporting at epoch \(marts[0].epoch)"
            }
            return nil
        }

        // MARK: actions

        mutating func extractorBegin(_ s: Int) {
            guard up[s], !marts[s].fenced, marts[s].role == .active, cycle[s] == nil else { return }
            cycle[s] = (marts[s].epoch, marts[s].role)
        }

        mutating func extractorCommit(_ s: Int) {
            guard up[s], let c = cycle[s] else { return }
            cycle[s] = nil
            let m = marts[s]
            guard m.epoch == c.epoch, m.role == c.role, !m.fenced else { return }  // superseded
            for server in 0..<2 where reach(s, server) {
                if let f = fences[server][s], f > c.epoch { return }  // an IDB fence stops it
            }
            if m.reporting == s { writes[c.epoch, default: []].insert(s) }
            log.append("site\(s + 1) commits at epoch \(c.epoch)")
        }

        mutating func coordinator(_ s: Int) {
            let p = 1 - s
            guard reach(s, p) else { return }
            if marts[p].epoch > marts[s].epoch, marts[p].retired.contains(s) { marts[s].fenced = true }
        }

        /// `dr declare --failed-site F` run against the survivor S: allowed when F does not answer
        /// from where it runs — also during a mere partition, which the tool cannot tell apart.
        mutating func drDeclare(survivor s: Int) {
            let f = 1 - s
            let m = marts[s]
            guard up[s], !reach(s, f), procedures[s] == nil, m.phase == "normal", !m.fenced else { return }
            let e = next(after: m.epoch, at: s)
            alive[s] = true
            procedures[s] = Procedure(
                kind: "dr declare", site: s, target: f, steps: DisasterRecovery.steps.map(\.name), epochTo: e,
                admitted: e)
            log.append("dr declare site\(f + 1) failed onto site\(s + 1), epoch → \(e)")
        }

        mutating func rtnStart(site f: Int, switchOver: Bool) {
            let s = 1 - f
            let m = marts[s]
            guard reach(s, f), procedures[s] == nil, m.phase == "emergency", m.reporting == s, !m.fenced else { return }
            let so = switchOver && mode == .activeStandby
            alive[s] = true
            let admitted = next(after: m.epoch, at: s)
            procedures[s] = Procedure(
                kind: "rtn start", site: s, target: f, steps: ReturnToNormal.steps(switchOver: so).map(\.name),
                epochTo: so ? next(after: admitted, at: s) : admitted, admitted: admitted)
            log.append("rtn start site\(f + 1) (switch-over \(so))")
        }

        mutating func switchOver() {
            guard let r = (0..<2).first(where: { up[$0] && marts[$0].reporting == $0 && !marts[$0].fenced }) else {
                return
            }
            let t = 1 - r
            guard reach(r, t), !running, marts[r].phase == "normal", marts[t].phase == "normal", !marts[t].fenced,
                marts[t].epoch == marts[r].epoch, mode == .activeActive || marts[t].follows == r
            else { return }
            let e = next(after: marts[r].epoch, at: r)
            alive[r] = true
            procedures[r] = Procedure(
                kind: SwitchOver.kind, site: r, target: t, steps: SwitchOver.steps(mode: mode).map(\.name), epochTo: e,
                admitted: e)
            log.append("switchover to site\(t + 1), epoch → \(e)")
        }

        /// The operator's command dies: the step in progress is redone whole when rerun.
        mutating func kill(_ j: Int) {
            procedures[j]?.substep = 0
            alive[j] = false
        }

        /// A step that changes the other mart `t` takes its procedure lock: it waits while a
        /// command journaled at `t` runs.
        func lockable(_ t: Int) -> Bool { !(alive[t] && procedures[t] != nil) }

        /// The procedure journaled at `j` does its next piece of work.
        mutating func step(_ j: Int) -> String? {
            guard var p = procedures[j], up[j] else { return nil }
            alive[j] = true  // (re)run by the operator
            let (s, t) = (p.site, p.target)
            let name = p.steps[p.done]
            var finished = true
            switch (p.kind, name) {
            case ("dr declare", "raise-epoch"):
                marts[s].epoch = max(marts[s].epoch, p.epochTo)
                marts[s].phase = "disaster-recovery"
            case ("dr declare", "fence"):
                fences[s][t] = p.epochTo
            case ("dr declare", "retire"):
                marts[s].retired.insert(t)
            case ("dr declare", "promote"):
                marts[s].role = .active
                marts[s].reporting = s
                marts[s].follows = nil
            case ("dr declare", "emergency"):
                marts[s].phase = "emergency"
            case ("rtn start", "purge-hold"):
                break
            case ("rtn start", "return-to-normal"):
                marts[s].phase = "return-to-normal"
            case ("rtn start", "prepare"):
                guard reach(s, t), lockable(t) else { return nil }
                marts[t] = Mart(epoch: p.admitted, role: .standby, phase: "return-to-normal", reporting: s)
                procedures[t] = nil  // its running procedures are deleted
            case ("rtn start", "copy"):
                guard reach(s, t) else { return nil }
                if mode == .activeStandby { marts[t].follows = s }
            case ("rtn start", "re-admit"):
                guard reach(s, t), lockable(t) else { return nil }
                for x in [s, t] {
                    marts[x].epoch = max(marts[x].epoch, p.admitted)
                    marts[x].retired.remove(t)
                }
                marts[t].role = mode == .activeActive ? .active : .standby
                fences[s][t] = nil
            case ("rtn start", "normal"):
                guard reach(s, t), lockable(t) else { return nil }
                marts[s].phase = "normal"
                marts[t].phase = "normal"
            case (_, "switch-over"):
                // Old active s → standby under the new epoch; t (which follows s) catches up and
                // becomes the active under it; s follows t; reporting site flips.
                guard reach(s, t), lockable(t) else { return nil }
                switch p.substep {
                case 0:
                    if marts[t].follows == s {
                        marts[s].role = .standby
                        marts[s].epoch = max(marts[s].epoch, p.epochTo)
                    } else if marts[s].role == .active && marts[t].role != .active {
                        return nil  // the code refuses: nothing proves t holds everything
                    }
                case 1: marts[t].follows = nil
                case 2: marts[s].follows = t
                case 3:
                    marts[t].role = .active
                    marts[t].reporting = t
                    marts[t].epoch = max(marts[t].epoch, p.epochTo)
                default: marts[s].reporting = t
                }
                p.substep += 1
                finished = p.substep > 4
            case (SwitchOver.kind, "move-reporting"):
                guard reach(s, t), lockable(t) else { return nil }
                if p.substep == 0 {
                    marts[t].reporting = t
                    marts[t].epoch = max(marts[t].epoch, p.epochTo)
                } else {
                    marts[s].reporting = t
                    marts[s].epoch = max(marts[s].epoch, p.epochTo)
                }
                p.substep += 1
                finished = p.substep > 1
            default:
                return "the model does not know step \(name) of \(p.kind)"
            }
            if finished {
                p.done += 1
                p.substep = 0
            }
            procedures[j] = p.done == p.steps.count ? nil : p
            return nil
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
    static func walk(mode: Topology.Mode, ballots: Bool, seed: UInt64, length: Int) -> (String, [String])? {
        var w = World(mode: mode, ballots: ballots)
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
            case 78..<80: w.switchOver()
            case 80..<82: w.kill(s)
            default:
                if let unknown = w.step(s) { return (unknown, w.log) }
            }
            if let v = w.violation() { return (v, w.log) }
        }
        return nil
    }

    @Test(arguments: [Topology.Mode.activeStandby, .activeActive])
    func neverTwoWritableReportingMartsPerEpoch(mode: Topology.Mode) {
        var procedures = 0
        for seed in UInt64(0)..<3000 {
            if let (violation, log) = Self.walk(mode: mode, ballots: true, seed: seed, length: 400) {
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
                var w = World(mode: mode, ballots: true)
                var rng = SplitMix64(state: seed)
                for _ in 0..<400 {
                    let s = Int.random(in: 0..<2, using: &rng)
                    switch Int.random(in: 0..<10, using: &rng) {
                    case 0: w.up[s] = false
                    case 1: w.up[s] = true
                    case 2: w.linked.toggle()
                    case 3: w.drDeclare(survivor: s)
                    case 4: w.rtnStart(site: s, switchOver: Bool.random(using: &rng))
                    case 5: w.switchOver()
                    default:
                        if let p = w.procedures[s], p.done == p.steps.count - 1 {
                            _ = w.step(s)
                            if w.procedures[s] == nil { seen.insert("\(mode.rawValue) \(p.kind) \(p.steps.count)") }
                        } else {
                            _ = w.step(s)
                        }
                    }
                }
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
            found = Self.walk(mode: .activeStandby, ballots: false, seed: seed, length: 400)?.0
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
