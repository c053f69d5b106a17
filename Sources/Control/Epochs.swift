import Topology

/// Epoch numbers as ballots: the epochs a procedure journaled at a site raises to belong to that
/// site alone — of the deployment's `n` sites sorted by name, the one at index `i` owns the epochs
/// `e` with `e % n == (i + 1) % n` (site1 of two: 1, 3, 5…; site2: 2, 4, 6…). Two operators who
/// declare each other's site failed during a partition (each side sees the other as down) thus
/// raise different epochs, and when the link returns the lower one is fenced by its peer's
/// coordinator: never two writable reporting marts under one epoch.
public enum Epochs {
    public static func next(after epoch: Int64, at site: String, sites: [String]) -> Int64 {
        let names = Array(Set(sites)).sorted()
        let n = Int64(max(names.count, 1))
        let owned = Int64((names.firstIndex(of: site) ?? 0) + 1) % n
        var e = epoch + 1
        while e % n != owned { e += 1 }
        return e
    }

    public static func next(after epoch: Int64, at site: String, _ topology: Topology) -> Int64 {
        next(after: epoch, at: site, sites: topology.sites.map(\.name))
    }

    /// The epoch the same site owned before `epoch` (one of its own).
    public static func previous(before epoch: Int64, _ topology: Topology) -> Int64 {
        epoch - Int64(max(Set(topology.sites.map(\.name)).count, 1))
    }
}
