import Control
import Testing
import Topology

@testable import Coordinator

/// The rule that tells a site failure from a partition (CONTRACT 6.4), decided from observations
/// alone: every combination of what `dr declare` can see from here and hear from its witnesses.
@Suite("Partition check")
struct PartitionCheckTests {
    static let w1 = HostPort(host: "10.0.0.9", port: 7909)
    static let w2 = HostPort(host: "10.0.1.9", port: 7909)

    static func reach(coordinator: Bool, postgres: Bool) -> PartitionCheck.WitnessAnswer {
        .reach(
            SiteReach(site: "site1", coordinator: coordinator, postgres: postgres, checkedAt: "2026-12-02T00:00:00Z"))
    }

    static func decide(
        postgres: String? = nil, coordinator: Bool = false,
        witnesses: [(address: HostPort, answer: PartitionCheck.WitnessAnswer)], withoutWitness: Bool = false
    ) -> PartitionCheck.Verdict {
        PartitionCheck.decide(
            .init(
                failedSite: "site1", postgresFromHere: postgres, coordinatorFromHere: coordinator,
                coordinatorAddress: "127.0.0.1:7901", witnesses: witnesses, withoutWitness: withoutWitness))
    }

    /// Catches a witness's view ignored: either of the site's parts answering the witness is a
    /// partition, whatever --without-witness says.
    @Test(arguments: [(true, false), (false, true), (true, true)])
    func aWitnessThatReachesTheSiteRefuses(coordinator: Bool, postgres: Bool) {
        for without in [false, true] {
            let v = Self.decide(
                witnesses: [
                    (Self.w1, .noAnswer("timed out")),
                    (Self.w2, Self.reach(coordinator: coordinator, postgres: postgres)),
                ],
                withoutWitness: without)
            #expect(v.refusal?.rule == "witness-reaches-failed-site")
            #expect(v.refusal?.message.contains("witness 10.0.1.9:7909") == true, "the witness that sees it is named")
        }
    }

    /// Catches the local check lost behind the witnesses: answering from here refuses first.
    @Test func answeringFromHereRefusesBeforeAnyWitness() {
        let quiet = [(address: Self.w1, answer: Self.reach(coordinator: false, postgres: false))]
        #expect(
            Self.decide(postgres: "it accepted a connection", witnesses: quiet).refusal?.rule
                == "failed-site-unreachable")
        #expect(Self.decide(coordinator: true, witnesses: quiet).refusal?.rule == "failed-site-unreachable")
    }

    /// Catches a silent witness taken as "the site is down": no answer is no evidence.
    @Test func noWitnessAnsweringRefusesUnlessTheOperatorSaysSo() {
        let silent: [(address: HostPort, answer: PartitionCheck.WitnessAnswer)] = [
            (Self.w1, .noAnswer("connection refused")), (Self.w2, .noAnswer("refused the token")),
        ]
        let refused = Self.decide(witnesses: silent)
        #expect(refused.refusal?.rule == "witness-must-answer")
        #expect(refused.refusal?.message.contains("10.0.0.9:7909: connection refused") == true)
        #expect(refused.refusal?.remedy.contains("--without-witness") == true)
        guard case .proceed(let g, _) = Self.decide(witnesses: silent, withoutWitness: true) else {
            Issue.record("--without-witness lets it proceed")
            return
        }
        #expect(g == .withoutWitness)
    }

    /// Catches a declaration refused when a witness did answer that the site is gone (one
    /// answering witness is enough), and the guard recorded wrongly.
    @Test func oneWitnessNotReachingTheSiteIsEnough() {
        let v = Self.decide(witnesses: [
            (Self.w1, .noAnswer("timed out")), (Self.w2, Self.reach(coordinator: false, postgres: false)),
        ])
        guard case .proceed(let g, let found) = v else {
            Issue.record("expected to proceed: \(v)")
            return
        }
        #expect(g == .witnessed)
        #expect(found.contains("10.0.1.9:7909 does not reach site1"))
    }

    /// Catches a topology without witnesses refused (the operator's word is then the guard) and
    /// not said so.
    @Test func withoutWitnessesTheConfirmationIsTheGuard() {
        guard case .proceed(let g, let found) = Self.decide(witnesses: []) else {
            Issue.record("no witness configured proceeds")
            return
        }
        #expect(g == .noWitnessConfigured)
        #expect(found.contains("only guard"))
    }
}

/// What `status` and the status page say of the guard against declaring a partitioned site failed.
@Suite("Witnesses in status")
struct WitnessStatusTests {
    static func status(_ witnesses: [DeploymentStatus.WitnessStatus]) -> DeploymentStatus {
        DeploymentStatus(
            deployment: "d", mode: .activeStandby, sites: [], collectors: [], witnesses: witnesses,
            partitionGuard: DeploymentStatus.partitionGuard(witnesses), collectedAt: "2026-12-02T00:00:00Z")
    }

    /// Catches a deployment without witnesses shown as if it were guarded.
    @Test func withoutWitnessesStatusAndThePageSaySo() {
        let s = Self.status([])
        #expect(s.lines().contains { $0.contains("no witness configured") && $0.contains("only guard") })
        #expect(s.html(viewpoint: "site1").contains(#"<p id="partition-guard" class="warn">no witness configured"#))
    }

    /// Catches a silent witness shown as answering, and what an answering one sees left out.
    @Test func eachWitnessWithWhatItSees() {
        let s = Self.status([
            .init(
                address: "10.0.0.9:7909", reachable: true,
                sees: [SiteReach(site: "site1", coordinator: true, postgres: false, checkedAt: "t")]),
            .init(address: "10.0.1.9:7909", reachable: false, error: "does not answer (timed out)"),
        ])
        let lines = s.lines()
        #expect(
            lines.contains(
                "witnesses: 1 of 2 witnesses answering: dr declare is refused while one of them reaches the failed site"
            ))
        #expect(lines.contains("  10.0.0.9:7909: answering; site1: coordinator up, PostgreSQL DOWN"))
        #expect(lines.contains("  10.0.1.9:7909: NOT ANSWERING — does not answer (timed out)"))
    }
}
