/// A disk queue failure, with what it means for the caller.
public struct DiskQueueError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// The byte bound or the free-disk reserve is reached: nothing was written; try again
        /// later (the collector answers 503).
        case full
        /// A write or fsync failed: the queue accepts no more appends until it is reopened;
        /// what was durable before is still read and shipped.
        case writeFailed
        /// Another process has the queue open.
        case inUse
        /// The queue was closed.
        case closed
        /// A file operation failed.
        case io
        /// The directory does not hold a queue this version can read.
        case unreadable
    }

    public var code: Code
    public var message: String
    public var errno: Int32?

    public init(code: Code, message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { "disk queue: \(message)" }
}
