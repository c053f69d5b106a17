import Foundation
import Topology

/// What a witness (`bcpipe witness run`) reports of one site: whether that site's coordinator and
/// PostgreSQL server answer from the witness's location (CONTRACT 4, `GET /v1/reach/SITE`).
public struct SiteReach: Codable, Sendable, Equatable {
    public var site: String
    public var coordinator: Bool
    public var postgres: Bool
    /// RFC 3339, when the witness looked.
    public var checkedAt: String

    public init(site: String, coordinator: Bool, postgres: Bool, checkedAt: String) {
        self.site = site
        self.coordinator = coordinator
        self.postgres = postgres
        self.checkedAt = checkedAt
    }

    enum CodingKeys: String, CodingKey {
        case site, coordinator, postgres
        case checkedAt = "checked_at"
    }

    /// Whether anything of the site answers.
    public var seesSite: Bool { coordinator || postgres }

    /// `coordinator up, PostgreSQL DOWN`.
    public var summary: String {
        "coordinator \(coordinator ? "up" : "DOWN"), PostgreSQL \(postgres ? "up" : "DOWN")"
    }
}

/// The rule of CONTRACT 6.4 that tells a site failure from a network partition, decided from what
/// was seen: the failed site's server and coordinator from here, and each witness's answer. Pure:
/// `dr declare` gathers the observations, this decides.
public enum PartitionCheck {
    /// One witness's answer about the failed site.
    public enum WitnessAnswer: Sendable, Equatable {
        case reach(SiteReach)
        /// It did not answer (or answered with an error): why.
        case noAnswer(String)
    }

    public struct Observations: Sendable, Equatable {
        public var failedSite: String
        /// How the failed site's server answered from here, nil when it did not.
        public var postgresFromHere: String?
        public var coordinatorFromHere: Bool
        /// The coordinator's address as this host reaches it (for the message).
        public var coordinatorAddress: String
        /// Every witness of the topology, in its order.
        public var witnesses: [(address: HostPort, answer: WitnessAnswer)]
        /// `--without-witness`: the operator takes the place of a witness that does not answer.
        public var withoutWitness: Bool

        public init(
            failedSite: String, postgresFromHere: String?, coordinatorFromHere: Bool, coordinatorAddress: String,
            witnesses: [(address: HostPort, answer: WitnessAnswer)], withoutWitness: Bool
        ) {
            self.failedSite = failedSite
            self.postgresFromHere = postgresFromHere
            self.coordinatorFromHere = coordinatorFromHere
            self.coordinatorAddress = coordinatorAddress
            self.witnesses = witnesses
            self.withoutWitness = withoutWitness
        }

        public static func == (a: Self, b: Self) -> Bool {
            a.failedSite == b.failedSite && a.postgresFromHere == b.postgresFromHere
                && a.coordinatorFromHere == b.coordinatorFromHere && a.coordinatorAddress == b.coordinatorAddress
                && a.withoutWitness == b.withoutWitness
                && a.witnesses.map(\.address) == b.witnesses.map(\.address)
                && a.witnesses.map(\.answer) == b.witnesses.map(\.answer)
        }
    }

    /// What guarded a declaration that may proceed; journaled with it.
    public enum Guard: String, Sendable, Equatable, Codable {
        /// At least one witness answered, and none reaches the failed site.
        case witnessed
        /// Witnesses are configured, none answered, and the operator gave `--without-witness`.
        case withoutWitness = "without-witness"
        /// The topology lists no witness: the operator's `--confirm-site-down` is the only guard.
        case noWitnessConfigured = "no-witness-configured"
    }

    public enum Verdict: Sendable {
        case proceed(Guard, String)
        case refuse(SafetyRefusal)

        public var refusal: SafetyRefusal? {
            if case .refuse(let r) = self { return r }
            return nil
        }
    }

    public static func decide(_ o: Observations) -> Verdict {
        let site = o.failedSite
        if let answer = o.postgresFromHere {
            return .refuse(
                SafetyRefusal(
                    rule: "failed-site-unreachable",
                    message:
                        "\(site)'s PostgreSQL server still answers from here (\(answer)): this is a network outage, and promoting now would de-synchronise the marts",
                    remedy: "restore the link and let the pipeline catch up; declare only once \(site)'s server is down"
                ))
        }
        if o.coordinatorFromHere {
            return .refuse(
                SafetyRefusal(
                    rule: "failed-site-unreachable",
                    message: "\(site)'s coordinator still answers at \(o.coordinatorAddress) from here",
                    remedy: "declare only once \(site)'s coordinator is down too"))
        }
        let answered = o.witnesses.compactMap { w -> (HostPort, SiteReach)? in
            if case .reach(let r) = w.answer { return (w.address, r) }
            return nil
        }
        if let (witness, reach) = answered.first(where: { $0.1.seesSite }) {
            return .refuse(
                SafetyRefusal(
                    rule: "witness-reaches-failed-site",
                    message:
                        "witness \(witness) still reaches \(site) (\(reach.summary), checked at \(reach.checkedAt)): \(site) is cut off from here, not down — a network partition, and promoting now would leave two writable reporting marts",
                    remedy:
                        "restore the link between the sites and let the pipeline catch up (Runbooks/wan-outage-or-site-failure.md); declare only once no witness reaches \(site)"
                ))
        }
        if o.witnesses.isEmpty {
            return .proceed(
                .noWitnessConfigured,
                "no witness configured: --confirm-site-down is the only guard that \(site) is down, not cut off")
        }
        if !answered.isEmpty {
            let names = answered.map { "\($0.0)" }.joined(separator: ", ")
            return .proceed(.witnessed, "witness \(names) does not reach \(site) either (\(answered[0].1.summary))")
        }
        let why = o.witnesses.map { w -> String in
            if case .noAnswer(let e) = w.answer { return "\(w.address): \(e)" }
            return "\(w.address)"
        }.joined(separator: "; ")
        if o.withoutWitness {
            return .proceed(
                .withoutWitness,
                "no witness answers (\(why)); going on without one, on the operator's word (--without-witness)")
        }
        return .refuse(
            SafetyRefusal(
                rule: "witness-must-answer",
                message:
                    "no witness answers (\(why)), so a partition cannot be told from a failure of \(site)",
                remedy:
                    "bring a witness back (bcpipe witness run) or restore its link; or, having confirmed by other means that \(site) is down, add --without-witness (the journal records it)"
            ))
    }
}
