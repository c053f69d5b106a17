import Topology

/// The control plane's vocabulary (CONTRACT 4 and 6): the raw values are the strings stored in
/// `control.*` and shown in the JSON of `/v1/status` and `bcpipe status --json`.

/// The deployment's phase, held in each mart's `control.deployment.phase`.
public enum Phase: String, Codable, Sendable, Equatable, CaseIterable {
    case normal
    case disasterRecovery = "disaster-recovery"
    case emergency
    case returnToNormal = "return-to-normal"
}

/// A mart's role: the active one extracts, a standby follows the active by replication. The
/// topology file's `extractors[].role` says each mart's role at first start; `control.deployment`
/// holds it afterwards (procedures change it).
public typealias Role = Topology.ExtractorRole

/// A source's state for completeness (CONTRACT 5 `report.completeness.state`,
/// `control.source_state.state`).
public enum SourceState: String, Codable, Sendable, Equatable, CaseIterable {
    case current, delayed, stuck, retired
}

/// The operators' procedures, as journaled in `control.procedure.kind`.
public enum ProcedureKind: String, Codable, Sendable, Equatable, CaseIterable {
    case drDeclare = "dr declare"
    case rtnStart = "rtn start"
    case switchover

    /// The form used in a fault-injection point (`dr-declare:after:fence`).
    public var failpointName: String { rawValue.replacingOccurrences(of: " ", with: "-") }
}

/// `control.procedure.status`.
public enum ProcedureStatus: String, Codable, Sendable, Equatable, CaseIterable {
    case running, done
}

/// One step of a procedure (`control.procedure.steps_done`, `control.journal.step`).
public enum Step: String, Codable, Sendable, Equatable, CaseIterable {
    // dr declare
    case raiseEpoch = "raise-epoch"
    case fence, retire, promote, emergency
    // rtn start
    case purgeHold = "purge-hold"
    case returnToNormal = "return-to-normal"
    case prepare, copy
    case readmit = "re-admit"
    case switchOver = "switch-over"
    case normal
    // switchover (active-active)
    case moveReporting = "move-reporting"

    /// What the step does, as the dry run and the progress lines say it.
    public var what: String {
        switch self {
        case .raiseEpoch: "raise the deployment epoch; phase disaster-recovery"
        case .fence: "write the fence into the surviving IDBs (the failed site's extractor, if it returns, sees it)"
        case .retire: "retire the failed site's sources and IDBs: extraction stops waiting for them"
        case .promote: "make the surviving mart active and the reporting mart"
        case .emergency: "phase emergency"
        case .purgeHold: "hold IDB purges until the returning site has caught up"
        case .returnToNormal: "phase return-to-normal"
        case .prepare: "clear the returning site's mart and fence; it waits as a standby during the copy"
        case .copy: "copy the reporting mart from an exported snapshot, then follow it from the same slot"
        case .readmit: "re-admit the site's sources and IDBs (its IDBs are read again from the start); new epoch"
        case .switchOver:
            "the active stops writing, the standby catches up and becomes the active; the old active follows it; new epoch"
        case .normal: "release the purge hold; phase normal"
        case .moveReporting: "the reporting mart moves to the other active mart; new epoch"
        }
    }
}

/// How a procedure command ended.
public enum ProcedureOutcome: Sendable, Equatable {
    case done(epoch: Int64)
    case alreadyDone(String)
    case dryRun
}
