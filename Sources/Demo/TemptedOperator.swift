import Coordinator
import Foundation
import Lab
import Topology

/// An operator at one site who, seeing the other site gone during a WAN cut, declares it failed
/// (`dr declare --confirm-site-down` with the surviving site's topology file): the witness must
/// stop them. The demo and the chaos run play it during their cuts.
enum TemptedOperator {
    /// Declares `failed` failed from `survivor`'s view. Returns the refusal, or nil when the
    /// declaration went through (a mart promoted during a partition: a broken promise).
    static func declare(_ failed: String, from survivor: String, lab: LocalLab, actor: String) async throws
        -> SafetyRefusal?
    {
        let view = try Topology.load(path: lab.topologyPath(site: survivor))
        do {
            _ = try await DisasterRecovery(
                topology: view, failedSite: failed, confirmSiteDown: true, dryRun: false, actor: actor, say: { _ in }
            ).run()
            return nil
        } catch let refusal as SafetyRefusal {
            return refusal
        }
    }
}
