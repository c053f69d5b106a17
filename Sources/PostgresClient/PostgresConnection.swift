import CLibPQ
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A value that can be bound as a query parameter (sent in PostgreSQL's text format).
public protocol PostgresBindable: Sendable {
    /// The text form PostgreSQL parses for this value; nil binds SQL NULL.
    var postgresText: String? { get }
}

/// A notification received on a channel this connection listens to.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    public var processID: Int32
}

/// One PostgreSQL connection over libpq.
///
/// The connection is an actor on its own serial executor (a dedicated dispatch queue): libpq's
/// blocking calls never run on the cooperative thread pool. Every wait for the server is bounded
/// by ``PostgresConfiguration/effectiveOperationTimeout``; a wait that runs out closes the
/// connection, because a half-answered protocol exchange cannot be resumed. Task cancellation
/// sends a cancel request (`PQcancel`) and, if the server does not stop within two seconds,
/// abandons the connection.
public actor PostgresConnection {
    private let executor: QueueExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    // Only touched on the actor, and by deinit once nothing else can.
    nonisolated(unsafe) private var pg: OpaquePointer?
    private let canceller: Canceller
    public nonisolated let configuration: PostgresConfiguration
    private let logger: Logger
    private var transactionDepth = 0

    private init(executor: QueueExecutor, configuration: PostgresConfiguration, logger: Logger) {
        self.executor = executor
        self.configuration = configuration
        self.logger = logger
        self.canceller = Canceller()
    }

    /// Opens a connection and applies the session settings (statement timeout, UTC, ISO dates).
    ///
    /// #### Errors
    /// ``PostgresError/Code/connectionFailed`` with libpq's reason (refused, timeout, authentication).
    public static func connect(
        _ configuration: PostgresConfiguration, logger: Logger = Logger(label: "bcpipe.postgres")
    )
        async throws -> PostgresConnection
    {
        let connection = PostgresConnection(
            executor: QueueExecutor(label: "bcpipe.postgres.\(configuration.targetDescription)"),
            configuration: configuration, logger: logger)
        try await connection.open()
        return connection
    }

    /// Opens a connection, runs `body` with it and closes it, whether `body` returns or throws
    /// (a scoped connection: nothing left to a detached cleanup that may never run).
    public static func with<T: Sendable>(
        _ configuration: PostgresConfiguration, logger: Logger = Logger(label: "bcpipe.postgres"),
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await connect(configuration, logger: logger).closing(body)
    }

    /// Runs `body` with this connection and closes it, whether `body` returns or throws.
    public nonisolated func closing<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await close()
            return result
        } catch {
            await close()
            throw error
        }
    }

    private func open() throws {
        let params = configuration.connectParameters
        let keys = params.map { strdup($0.0) }
        let values = params.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPtrs: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valuePtrs: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        let conn = PQconnectdbParams(&keyPtrs, &valuePtrs, 1)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let conn { PQfinish(conn) }
            throw PostgresError(
                code: .connectionFailed, message: "cannot connect: \(message)", target: configuration.targetDescription)
        }
        pg = conn
        canceller.set(PQgetCancel(conn))
        PQsetnonblocking(conn, 1)
        // Server notices (e.g. "table does not exist, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        try execute(
            "SET statement_timeout = \(configuration.statementTimeoutMilliseconds); SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET client_encoding = 'UTF8'"
        )
    }

    /// Closes the connection. Safe to call more than once.
    public func close() {
        canceller.set(nil)
        if let pg { PQfinish(pg) }
        pg = nil
    }

    deinit {
        canceller.set(nil)
        if let pg { PQfinish(pg) }
    }

    /// True while the connection is open and libpq considers it healthy.
    public var isOpen: Bool { pg.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// The server's process ID for this session (for `pg_terminate_backend` in tests and tools).
    public var backendPID: Int32 { pg.map { PQbackendPID($0) } ?? 0 }

    // MARK: queries

    /// Runs one parameterised statement and returns its rows. Values are always bound, never spliced into SQL.
    @discardableResult
    public func query(_ sql: String, _ parameters: [any PostgresBindable] = []) async throws -> PostgresRows {
        try await cancellable { try self.runQuery(sql, parameters.map { $0.postgresText }) }
    }

    /// Runs one parameterised statement with optional (nullable) parameters.
    @discardableResult
    public func query(_ sql: String, nullable parameters: [(any PostgresBindable)?]) async throws -> PostgresRows {
        try await cancellable { try self.runQuery(sql, parameters.map { $0?.postgresText }) }
    }

    /// Runs one or more statements with no parameters (simple query protocol), e.g. a migration
    /// file or a replication command; returns the last statement's result.
    @discardableResult
    public func execute(_ sql: String) throws -> PostgresRows {
        let conn = try live()
        guard PQsendQuery(conn, sql) == 1 else { throw connectionError("cannot send the statement") }
        return try finishExchange(conn)
    }

    /// Runs `body` on the connection's executor, with the connection isolated (for a sequence of
    /// statements that must not interleave with others, e.g. an explicit `BEGIN ISOLATION LEVEL …`).
    public func run<T: Sendable>(_ body: @Sendable (isolated PostgresConnection) async throws -> T) async throws -> T {
        try await body(self)
    }

    /// Runs `body` in a transaction: `COMMIT` when it returns, `ROLLBACK` when it throws.
    /// Nested calls run inside the outer transaction.
    public func transaction<T: Sendable>(
        _ body: @Sendable (isolated PostgresConnection) async throws -> T
    ) async throws -> T {
        if transactionDepth > 0 {
            return try await body(self)
        }
        try execute("BEGIN")
        transactionDepth += 1
        do {
            let value = try await body(self)
            transactionDepth -= 1
            try execute("COMMIT")
            return value
        } catch {
            transactionDepth -= 1
            if pg != nil, isOpen { try? execute("ROLLBACK") }
            throw error
        }
    }

    private func runQuery(_ sql: String, _ values: [String?]) throws -> PostgresRows {
        let conn = try live()
        let cValues: [UnsafeMutablePointer<CChar>?] = values.map { $0.map { strdup($0) } ?? nil }
        defer { cValues.forEach { free($0) } }
        let sent = cValues.withUnsafeBufferPointer { buf -> Int32 in
            buf.withMemoryRebound(to: UnsafePointer<CChar>?.self) { ptrs in
                PQsendQueryParams(conn, sql, Int32(values.count), nil, ptrs.baseAddress, nil, nil, 0)
            }
        }
        guard sent == 1 else { throw connectionError("cannot send the query") }
        return try finishExchange(conn)
    }

    /// Flushes what was sent and collects every result; throws the first error after draining.
    @discardableResult
    private func finishExchange(_ conn: OpaquePointer) throws -> PostgresRows {
        let deadline = Deadline(seconds: configuration.effectiveOperationTimeout)
        try flush(conn, deadline)
        var last: PostgresRows?
        var failure: PostgresError?
        while let result = try nextResult(conn, deadline) {
            let status = PQresultStatus(result)
            switch status {
            case PGRES_FATAL_ERROR:
                if failure == nil { failure = serverError(result) }
                PQclear(result)
            case PGRES_COPY_IN:
                // A COPY sent through query(): end it so the connection stays usable.
                PQclear(result)
                _ = PQputCopyEnd(conn, "COPY must use copyIn()")
            default:
                last = PostgresRows(result)
            }
        }
        if let failure { throw failure }
        guard let last else { throw connectionError("no result") }
        return last
    }

    // MARK: COPY

    /// Streams rows into `COPY … FROM STDIN`: `produce` is called with a sink for raw COPY data
    /// (text format unless the statement says otherwise). Returns the number of rows copied.
    ///
    /// Data is sent as it is produced; memory does not grow with the stream. Throwing from
    /// `produce` aborts the COPY (nothing is written) and rethrows.
    @discardableResult
    public func copyIn(_ sql: String, _ produce: (inout CopySink) throws -> Void) throws -> Int {
        let conn = try live()
        guard PQsendQueryParams(conn, sql, 0, nil, nil, nil, nil, 0) == 1 else {
            throw connectionError("cannot send COPY")
        }
        let deadline = Deadline(seconds: configuration.effectiveOperationTimeout)
        try flush(conn, deadline)
        guard let start = try nextResult(conn, deadline) else { throw connectionError("no answer to COPY") }
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            let error =
                PQresultStatus(start) == PGRES_FATAL_ERROR
                ? serverError(start) : connectionError("statement is not COPY FROM STDIN")
            PQclear(start)
            while let r = try nextResult(conn, deadline) { PQclear(r) }
            throw error
        }
        PQclear(start)
        var sink = CopySink(wire: wire, conn: conn, deadline: deadline)
        do {
            try closingOnAbandon {
                try produce(&sink)
                try sink.flushBuffer()
            }
        } catch {
            if pg != nil {
                _ = PQputCopyEnd(conn, "aborted by the client")
                try? flush(conn, deadline)
                while let r = try? nextResult(conn, deadline) { PQclear(r) }
            }
            throw error
        }
        while true {
            let r = PQputCopyEnd(conn, nil)
            if r == 1 { break }
            if r == -1 { throw connectionError("COPY end failed") }
            try wait(conn, forWrite: true, deadline)
        }
        let rows = try finishExchange(conn)
        return rows.affectedRows
    }

    // MARK: LISTEN / NOTIFY

    /// Subscribes this connection to a channel.
    public func listen(_ channel: String) throws {
        try execute("LISTEN \(PostgresConnection.quoteIdentifier(channel))")
    }

    /// Sends a notification (bound parameters, so any payload is safe).
    public func notify(_ channel: String, payload: String = "") async throws {
        try await query("SELECT pg_notify($1, $2)", [channel, payload])
    }

    /// Returns the notifications received, waiting up to `timeout` seconds for the first one.
    public func notifications(timeout: Double) throws -> [PostgresNotification] {
        let conn = try live()
        var out = drainNotifications(conn)
        if !out.isEmpty { return out }
        let deadline = Deadline(seconds: timeout)
        while out.isEmpty && !deadline.expired {
            do {
                // Waiting out the timeout here is normal, not a dead link: keep the connection.
                try wire.wait(conn, forWrite: false, deadline)
            } catch let e as PostgresError where e.code == .timeout {
                return []
            }
            guard PQconsumeInput(conn) == 1 else { throw connectionError("connection lost while listening") }
            out = drainNotifications(conn)
        }
        return out
    }

    private func drainNotifications(_ conn: OpaquePointer) -> [PostgresNotification] {
        _ = PQconsumeInput(conn)
        var out: [PostgresNotification] = []
        while let n = PQnotifies(conn) {
            out.append(
                PostgresNotification(
                    channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra),
                    processID: n.pointee.be_pid))
            PQfreemem(n)
        }
        return out
    }

    // MARK: plumbing

    private func live() throws -> OpaquePointer {
        guard let pg else {
            throw PostgresError(
                code: .closed, message: "the connection is closed", target: configuration.targetDescription)
        }
        guard PQstatus(pg) == CONNECTION_OK else {
            throw connectionError("the connection is broken")
        }
        return pg
    }

    private var wire: Wire {
        Wire(canceller: canceller, target: configuration.targetDescription)
    }

    private func flush(_ conn: OpaquePointer, _ deadline: Deadline) throws {
        try closingOnAbandon { try wire.flush(conn, deadline) }
    }

    private func nextResult(_ conn: OpaquePointer, _ deadline: Deadline) throws -> OpaquePointer? {
        try closingOnAbandon { try wire.nextResult(conn, deadline) }
    }

    private func wait(_ conn: OpaquePointer, forWrite: Bool, _ deadline: Deadline) throws {
        try closingOnAbandon { try wire.wait(conn, forWrite: forWrite, deadline) }
    }

    /// Closes the connection when a wait gave up on it (deadline, or a cancel the server ignored):
    /// a half-finished protocol exchange cannot be resumed.
    private func closingOnAbandon<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as PostgresError where e.code == .timeout || (e.code == .cancelled && e.sqlState == nil) {
            logger.debug(
                "abandoning connection",
                metadata: ["target": "\(configuration.targetDescription)", "reason": "\(e.code)"])
            close()
            throw e
        }
    }

    private func cancellable<T: Sendable>(_ body: () throws -> T) async throws -> T {
        canceller.reset()
        return try await withTaskCancellationHandler {
            try Task.checkCancellation()
            do {
                return try body()
            } catch let e as PostgresError where e.sqlState == "57014" && canceller.cancelledAt != nil {
                throw PostgresError(code: .cancelled, sqlState: e.sqlState, message: e.message, target: e.target)
            }
        } onCancel: {
            canceller.cancel()
        }
    }

    private func serverError(_ result: OpaquePointer) -> PostgresError {
        func field(_ code: Int32) -> String? {
            PQresultErrorField(result, code).map { String(cString: $0) }
        }
        return PostgresError(
            code: .server, sqlState: field(Int32(UInt8(ascii: "C"))),
            message: field(Int32(UInt8(ascii: "M"))) ?? "unknown server error",
            detail: field(Int32(UInt8(ascii: "D"))), hint: field(Int32(UInt8(ascii: "H"))),
            target: configuration.targetDescription)
    }

    private func connectionError(_ what: String) -> PostgresError {
        let detail = pg.map { String(cString: PQerrorMessage($0)) } ?? ""
        let lost = pg.map { PQstatus($0) != CONNECTION_OK } ?? true
        return PostgresError(
            code: lost ? .connectionLost : .connectionFailed,
            message: detail.isEmpty ? what : "\(what): \(detail)", target: configuration.targetDescription)
    }

    /// Quotes an identifier for the few statements that cannot take parameters (LISTEN, CREATE DATABASE).
    public static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Quotes a string literal for statements that cannot take parameters.
    public static func quoteLiteral(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
    }

}

/// The writer handed to ``PostgresConnection/copyIn(_:_:)``: buffers COPY data and sends it in large chunks.
public struct CopySink: ~Copyable {
    fileprivate let wire: Wire
    fileprivate let conn: OpaquePointer
    fileprivate let deadline: Deadline
    fileprivate var buffer: [UInt8] = []
    static let chunkSize = 256 * 1024

    fileprivate init(wire: Wire, conn: OpaquePointer, deadline: Deadline) {
        self.wire = wire
        self.conn = conn
        self.deadline = deadline
        buffer.reserveCapacity(Self.chunkSize + 4096)
    }

    /// Appends raw COPY bytes (already encoded rows).
    public mutating func write(_ bytes: some Sequence<UInt8>) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.chunkSize { try flushBuffer() }
    }

    /// Appends one row encoded by a ``CopyRow``.
    public mutating func write(_ row: CopyRow) throws {
        try write(row.bytes)
    }

    fileprivate mutating func flushBuffer() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try wire.putCopyData(conn, $0, deadline) }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Encodes one row of COPY text format, escaping as PostgreSQL requires.
public struct CopyRow {
    public private(set) var bytes: [UInt8] = []
    private var first = true

    public init() { bytes.reserveCapacity(256) }

    private mutating func separator() {
        if !first { bytes.append(9) }
        first = false
    }

    /// A text column; nil is SQL NULL.
    public mutating func append(_ value: String?) {
        separator()
        guard let value else {
            bytes.append(contentsOf: [92, 78])  // \N
            return
        }
        for b in value.utf8 {
            switch b {
            case 92: bytes.append(contentsOf: [92, 92])
            case 9: bytes.append(contentsOf: [92, 116])
            case 10: bytes.append(contentsOf: [92, 110])
            case 13: bytes.append(contentsOf: [92, 114])
            default: bytes.append(b)
            }
        }
    }

    /// An integer column.
    public mutating func append(_ value: Int64?) {
        separator()
        guard let value else {
            bytes.append(contentsOf: [92, 78])
            return
        }
        bytes.append(contentsOf: String(value).utf8)
    }

    /// Ends the row.
    public mutating func end() {
        bytes.append(10)
        first = true
    }

    /// Clears the row for reuse without giving back its memory.
    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        first = true
    }
}

/// The socket-level waits shared by the connection and its COPY sink. Every wait is bounded.
struct Wire {
    let canceller: Canceller
    let target: String

    func flush(_ conn: OpaquePointer, _ deadline: Deadline) throws {
        while true {
            let r = PQflush(conn)
            if r == 0 { return }
            if r == -1 { throw lost(conn, "cannot send to the server") }
            try wait(conn, forWrite: true, deadline)
            // Read while we wait so the server is never blocked writing to us.
            if PQconsumeInput(conn) == 0 { throw lost(conn, "connection lost") }
        }
    }

    func nextResult(_ conn: OpaquePointer, _ deadline: Deadline) throws -> OpaquePointer? {
        while PQisBusy(conn) == 1 {
            try wait(conn, forWrite: false, deadline)
            if PQconsumeInput(conn) == 0 { throw lost(conn, "connection lost") }
        }
        return PQgetResult(conn)
    }

    /// Sends raw COPY bytes, waiting for the socket when libpq's buffer is full.
    func putCopyData(_ conn: OpaquePointer, _ bytes: UnsafeRawBufferPointer, _ deadline: Deadline) throws {
        guard bytes.count > 0 else { return }
        while true {
            let r = bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                PQputCopyData(conn, $0, Int32(bytes.count))
            }
            if r == 1 { break }
            if r == -1 { throw lost(conn, "COPY data failed") }
            try wait(conn, forWrite: true, deadline)
            if PQconsumeInput(conn) == 0 { throw lost(conn, "connection lost") }
        }
        if PQflush(conn) == -1 { throw lost(conn, "cannot send to the server") }
    }

    /// Waits for the socket in slices so a cancellation is noticed. Throws `.timeout` on the
    /// deadline and `.cancelled` two seconds after a cancel request the server did not act on;
    /// the caller must then close the connection.
    func wait(_ conn: OpaquePointer, forWrite: Bool, _ deadline: Deadline) throws {
        let fd = PQsocket(conn)
        guard fd >= 0 else { throw lost(conn, "no socket") }
        while true {
            var p = pollfd(fd: fd, events: Int16(forWrite ? POLLOUT | POLLIN : POLLIN), revents: 0)
            let slice = Int32(min(100, max(0, deadline.remainingMilliseconds)))
            let r = poll(&p, 1, slice)
            if r > 0 { return }
            if r < 0 && errno != EINTR { throw lost(conn, "poll failed") }
            if let since = canceller.cancelledAt, Deadline.now - since > 2 {
                throw PostgresError(
                    code: .cancelled,
                    message: "cancelled; the server did not stop in time, so the connection was closed",
                    target: target)
            }
            if deadline.expired {
                throw PostgresError(
                    code: .timeout,
                    message:
                        "no answer within \(Int(deadline.seconds)) s; the connection was closed (is the link or server down?)",
                    target: target)
            }
        }
    }

    func lost(_ conn: OpaquePointer, _ what: String) -> PostgresError {
        let detail = String(cString: PQerrorMessage(conn))
        return PostgresError(
            code: PQstatus(conn) == CONNECTION_OK ? .connectionFailed : .connectionLost,
            message: detail.isEmpty ? what : "\(what): \(detail)", target: target)
    }
}

/// A point in monotonic time some seconds ahead.
struct Deadline: Sendable {
    let seconds: Double
    let at: Double

    init(seconds: Double) {
        self.seconds = seconds
        at = Deadline.now + seconds
    }

    static var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    var expired: Bool { Deadline.now >= at }
    var remainingMilliseconds: Int { Int(max(0, (at - Deadline.now) * 1000)) }
}

/// Holds the connection's `PGcancel` so another thread can send a cancel request.
///
/// A cancel request opens its own connection and, on a dead link, may block for long; it runs
/// on its own thread and never holds the lock the query's wait loop needs.
/// `@unchecked Sendable`: its state is behind `lock`.
final class Canceller: @unchecked Sendable {
    private let lock = NSLock()
    private var handle: OpaquePointer?
    private var inUse = 0
    private var retired: [OpaquePointer] = []
    private var cancelled: Double?

    /// Replaces the handle; one still in use by a cancel thread is freed when that thread ends.
    func set(_ new: OpaquePointer?) {
        lock.lock()
        if let handle {
            if inUse > 0 { retired.append(handle) } else { PQfreeCancel(handle) }
        }
        handle = new
        lock.unlock()
    }

    func reset() {
        lock.lock()
        cancelled = nil
        lock.unlock()
    }

    var cancelledAt: Double? {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }

    /// Records the cancellation and sends a cancel request on a separate thread.
    func cancel() {
        lock.lock()
        cancelled = Deadline.now
        guard let handle else {
            lock.unlock()
            return
        }
        inUse += 1
        lock.unlock()
        let box = UnsafeSendable(handle)
        Thread.detachNewThread { [self] in
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(box.value, &buffer, 256)
            lock.lock()
            inUse -= 1
            if inUse == 0 {
                retired.forEach { PQfreeCancel($0) }
                retired.removeAll()
            }
            lock.unlock()
        }
    }

    deinit {
        if let handle { PQfreeCancel(handle) }
        retired.forEach { PQfreeCancel($0) }
    }
}

/// Carries a libpq pointer into the connection's own executor, the only place it is used.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
