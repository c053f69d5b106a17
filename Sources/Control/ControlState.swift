import Foundation
import Topology

/// A mart's `control` view of the deployment: epoch, phase, role, fencing, what disaster
/// recovery retired, the procedure in progress and the journal. Each site's mart holds its own;
/// the deployment's epoch is the highest of them. Read by ``ControlStore/load(journal:)``.
public struct ControlState: Codable, Sendable, Equatable {
    public struct Procedure: Codable, Sendable, Equatable {
        public var id: Int64
        public var kind: ProcedureKind
        public var target: String
        public var status: ProcedureStatus
        public var stepsDone: [Step]
        public var startedBy: String
        public var startedAt: String
        public var epochTo: Int64

        public init(
            id: Int64, kind: ProcedureKind, target: String, status: ProcedureStatus, stepsDone: [Step] = [],
            startedBy: String = "", startedAt: String = "", epochTo: Int64
        ) {
            self.id = id
            self.kind = kind
            self.target = target
            self.status = status
            self.stepsDone = stepsDone
            self.startedBy = startedBy
            self.startedAt = startedAt
            self.epochTo = epochTo
        }

        public var isRunning: Bool { status == .running }
    }

    public struct JournalEntry: Codable, Sendable, Equatable {
        public var at: String
        public var epoch: Int64
        public var actor: String
        public var procedure: String
        /// A step's name, or `safety-check`.
        public var step: String
        /// `done`, or for the safety check the guard that let it proceed.
        public var status: String
        public var detail: String?
    }

    public var site: String?
    public var epoch: Int64
    public var phase: Phase
    public var mode: Topology.Mode?
    public var role: Role?
    public var reportingSite: String?
    public var fencedReason: String?
    public var retiredSources: [String] = []
    public var retiredIDBs: [String] = []
    public var retiredSites: [String] = []
    /// The latest procedure journaled here.
    public var procedure: Procedure?
    /// Whether this mart subscribes to another (active-standby: it follows the active one).
    public var subscribed: Bool = false
    public var journal: [JournalEntry] = []

    public init(
        site: String?, epoch: Int64 = 1, phase: Phase = .normal, mode: Topology.Mode? = nil, role: Role? = nil,
        reportingSite: String? = nil, fencedReason: String? = nil
    ) {
        self.site = site
        self.epoch = epoch
        self.phase = phase
        self.mode = mode
        self.role = role
        self.reportingSite = reportingSite
        self.fencedReason = fencedReason
    }

    /// The procedure in progress here, if any.
    public var running: Procedure? { procedure.flatMap { $0.isRunning ? $0 : nil } }

    /// Active, not fenced and naming itself the reporting mart: its extractor writes what reports.
    public var isWritableReporting: Bool {
        role == .active && fencedReason == nil && site != nil && reportingSite == site
    }
}

/// A control-plane failure that is not a safety refusal: something to read or reach that was not
/// there. `code` names the kind for scripts and logs; `cause` is the error underneath, if any.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// A mart or IDB did not answer.
        case unreachable
        /// A mart's control tables are missing or empty: its migrations have not run.
        case notMigrated = "not-migrated"
        /// Another procedure holds the mart.
        case busy
        /// A wait (catch-up, replication) ran out of time; rerunning resumes.
        case timedOut = "timed-out"
        /// What a procedure found contradicts what it must assume.
        case inconsistent
        /// A copy or a tool it runs failed.
        case copyFailed = "copy-failed"
        /// A peer refused this one's credentials.
        case refused
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

/// Who runs a procedure: `$BCPIPE_OPERATOR`, else the OS user, at this host. Read by the
/// command-line tool and passed to the procedures.
public func operatorIdentity(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
    let who = environment["BCPIPE_OPERATOR"] ?? environment["USER"] ?? environment["LOGNAME"] ?? "uid\(getuid())"
    return "\(who)@\(ProcessInfo.processInfo.hostName)"
}
