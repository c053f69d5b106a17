import Demo
import Testing

/// The chaos run's schedule: reproducible from its seed, every kind of fault in it, cuts on both
/// sides of the stuck threshold, one site failure.
@Suite("Chaos schedule")
struct ChaosScheduleTests {
    @Test(arguments: [1, 7, 20_261_129, 999_999] as [UInt64])
    func everyKindOnceInASeededOrder(seed: UInt64) {
        let plan = ChaosRun.schedule(seed: seed, seconds: 120, threshold: 10, diskFaults: true)
        #expect(plan == ChaosRun.schedule(seed: seed, seconds: 120, threshold: 10, diskFaults: true))
        let cuts = plan.compactMap { f -> Double? in if case .cut(_, let s) = f { s } else { nil } }
        #expect(cuts.contains { $0 < 10 } && cuts.contains { $0 > 10 }, "\(plan)")
        #expect(plan.filter { $0 == .siteFailure }.count == 1)
        for kind: ChaosRun.Fault in [.killCollector, .killExtractor, .killCoordinator, .restartServer, .flipByte] {
            #expect(plan.contains(kind), "\(kind)")
        }
        #expect(plan.contains { if case .flaps = $0 { true } else { false } })
        #expect(plan.contains { if case .diskFull = $0 { true } else { false } })
        #expect(
            !ChaosRun.schedule(seed: seed, seconds: 120, threshold: 10, diskFaults: false).contains {
                if case .diskFull = $0 { true } else { false }
            })
    }

    @Test func longerRunsPlayMoreFaultsAndSeedsDiffer() {
        let short = ChaosRun.schedule(seed: 3, seconds: 60, threshold: 10, diskFaults: true)
        let long = ChaosRun.schedule(seed: 3, seconds: 1200, threshold: 10, diskFaults: true)
        #expect(long.count > short.count + 50)
        #expect(long.filter { $0 == .siteFailure }.count == 1, "one site failure per run")
        #expect(
            ChaosRun.schedule(seed: 4, seconds: 60, threshold: 10, diskFaults: true).map(\.description)
                != short.map(\.description))
    }
}
