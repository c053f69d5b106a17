import CZstd

/// An error from libzstd, or a frame that cannot be decoded within the limits given.
public struct ZstdError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, in categories a caller can act on.
    public enum Code: Sendable, Equatable {
        /// The input is not a valid zstd frame (corrupt, truncated or another format).
        case corruptInput
        /// The decoded size would exceed the caller's limit.
        case outputTooLarge
        /// The frame asks for a larger decoding window than allowed (see
        /// ``ZstdDecompressor/init(windowLogMax:)``): refused before the window is allocated.
        case windowTooLarge
        /// libzstd failed for another reason (out of memory, bad parameter).
        case library
    }

    public let code: Code
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "zstd: \(message)" }

    static func check(_ result: Int, _ what: String) throws -> Int {
        if ZSTD_isError(result) != 0 {
            let name = String(cString: ZSTD_getErrorName(result))
            let code: Code
            switch ZSTD_getErrorCode(result) {
            case ZSTD_error_prefix_unknown, ZSTD_error_corruption_detected, ZSTD_error_checksum_wrong,
                ZSTD_error_srcSize_wrong, ZSTD_error_frameParameter_unsupported, ZSTD_error_literals_headerWrong,
                ZSTD_error_dictionary_wrong:
                code = .corruptInput
            case ZSTD_error_frameParameter_windowTooLarge:
                code = .windowTooLarge
            case ZSTD_error_dstSize_tooSmall:
                code = .outputTooLarge
            default:
                code = .library
            }
            throw ZstdError(code: code, message: "\(what): \(name)")
        }
        return result
    }
}

/// One-shot zstd compression and decompression of byte buffers.
///
/// The functions are thread-safe; each call allocates its own context. For many small
/// buffers on one thread, ``ZstdCompressor`` reuses a context.
public enum Zstd {
    /// The default level, the same as the `zstd` command line tool's.
    public static let defaultLevel: Int32 = 3

    /// Compresses `input` into one zstd frame that records its content size.
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = defaultLevel) throws -> [UInt8] {
        var compressor = try ZstdCompressor(level: level)
        return try compressor.compress(input)
    }

    /// Compresses `input` into one zstd frame.
    public static func compress(_ input: [UInt8], level: Int32 = defaultLevel) throws -> [UInt8] {
        try input.withUnsafeBytes { try compress($0, level: level) }
    }

    /// Decompresses a buffer of one or more zstd frames, refusing to produce more than `maxOutput` bytes.
    ///
    /// #### Errors
    /// ``ZstdError/Code/corruptInput`` for anything that is not a complete zstd stream,
    /// ``ZstdError/Code/outputTooLarge`` when the decoded data would exceed `maxOutput`
    /// (a decompression bomb, or a limit such as the ingest body size).
    ///
    /// The decoding window is bounded by `maxOutput` too (``windowLog(for:)``): a crafted frame
    /// that declares a huge window is refused (``ZstdError/Code/windowTooLarge``) before
    /// anything is allocated for it.
    public static func decompress(_ input: UnsafeRawBufferPointer, maxOutput: Int) throws -> [UInt8] {
        var decompressor = try ZstdDecompressor(windowLogMax: windowLog(for: maxOutput))
        var output: [UInt8] = []
        try decompressor.decompress(input, maxOutput: maxOutput) { chunk in
            output.append(contentsOf: chunk)
        }
        try decompressor.finish()
        return output
    }

    /// The smallest window log (10…27, zstd's own bounds) whose window holds `bytes`: no valid
    /// frame of at most `bytes` decoded bytes needs a larger window.
    public static func windowLog(for bytes: Int) -> Int32 {
        let needed = bytes <= 1 ? 0 : Int.bitWidth - (bytes - 1).leadingZeroBitCount
        return Int32(Swift.min(27, Swift.max(10, needed)))
    }

    /// Decompresses `input`; see ``decompress(_:maxOutput:)-(UnsafeRawBufferPointer,_)``.
    public static func decompress(_ input: [UInt8], maxOutput: Int) throws -> [UInt8] {
        try input.withUnsafeBytes { try decompress($0, maxOutput: maxOutput) }
    }
}

/// A reusable compression context: one-shot frames or a stream of chunks.
///
/// Not thread-safe: use one per thread or actor.
public struct ZstdCompressor: ~Copyable {
    private let context: OpaquePointer
    public let level: Int32

    public init(level: Int32 = Zstd.defaultLevel) throws {
        guard let context = ZSTD_createCCtx() else {
            throw ZstdError(code: .library, message: "cannot allocate a compression context")
        }
        do {
            _ = try ZstdError.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level), "set level")
        } catch {
            ZSTD_freeCCtx(context)
            throw error
        }
        self.context = context
        self.level = level
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `input` as one complete frame.
    public mutating func compress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = try output.withUnsafeMutableBytes { out in
            try ZstdError.check(
                ZSTD_compress2(context, out.baseAddress, out.count, input.baseAddress, input.count), "compress")
        }
        output.removeLast(bound - written)
        return output
    }

    /// Compresses `input` as one complete frame.
    public mutating func compress(_ input: [UInt8]) throws -> [UInt8] {
        try input.withUnsafeBytes { try compress($0) }
    }

    /// Feeds a chunk of a stream; compressed bytes are handed to `sink` as they are produced.
    /// Call ``finishStream(sink:)`` after the last chunk.
    public mutating func streamChunk(_ input: UnsafeRawBufferPointer, sink: ([UInt8]) throws -> Void) throws {
        try drive(input, directive: ZSTD_e_continue, sink: sink)
    }

    /// Ends the current frame of the stream and flushes everything to `sink`.
    public mutating func finishStream(sink: ([UInt8]) throws -> Void) throws {
        try drive(UnsafeRawBufferPointer(start: nil, count: 0), directive: ZSTD_e_end, sink: sink)
    }

    private mutating func drive(
        _ input: UnsafeRawBufferPointer, directive: ZSTD_EndDirective, sink: ([UInt8]) throws -> Void
    ) throws {
        let chunkSize = ZSTD_CStreamOutSize()
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            let (remaining, produced) = try buffer.withUnsafeMutableBytes { out -> (Int, Int) in
                var outBuf = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let r = try ZstdError.check(
                    ZSTD_compressStream2(context, &outBuf, &inBuf, directive), "compress stream")
                return (r, outBuf.pos)
            }
            if produced > 0 { try sink(Array(buffer[0..<produced])) }
            let done = directive == ZSTD_e_end ? remaining == 0 : inBuf.pos == inBuf.size
            if done { return }
        }
    }
}

/// A streaming decompression context: feed compressed chunks, receive decoded chunks.
public struct ZstdDecompressor: ~Copyable {
    private let context: OpaquePointer
    private var produced = 0
    /// True between frames: the input seen so far ends on a frame boundary.
    private var atFrameBoundary = true

    /// A context that refuses frames whose window exceeds `2^windowLogMax` bytes (zstd's own
    /// default, 27, allows 128 MiB per context: the memory a hostile frame could claim).
    public init(windowLogMax: Int32 = 27) throws {
        guard let context = ZSTD_createDCtx() else {
            throw ZstdError(code: .library, message: "cannot allocate a decompression context")
        }
        do {
            _ = try ZstdError.check(
                ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, windowLogMax), "set windowLogMax")
        } catch {
            ZSTD_freeDCtx(context)
            throw error
        }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    /// Decodes `input` (any part of a stream of frames), handing decoded bytes to `sink`.
    ///
    /// #### Errors
    /// ``ZstdError/Code/outputTooLarge`` once the total decoded size would exceed `maxOutput`.
    public mutating func decompress(
        _ input: UnsafeRawBufferPointer, maxOutput: Int, sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let chunkSize = ZSTD_DStreamOutSize()
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            let (hint, producedNow) = try buffer.withUnsafeMutableBytes { out -> (Int, Int) in
                var outBuf = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let r = try ZstdError.check(ZSTD_decompressStream(context, &outBuf, &inBuf), "decompress")
                return (r, outBuf.pos)
            }
            atFrameBoundary = hint == 0
            if producedNow > 0 {
                produced += producedNow
                if produced > maxOutput {
                    throw ZstdError(
                        code: .outputTooLarge, message: "decoded data exceeds the limit of \(maxOutput) bytes")
                }
                try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<producedNow])) }
            }
            // Done with this input once it is consumed and the decoder holds nothing more to flush.
            if inBuf.pos == inBuf.size && producedNow < chunkSize { return }
        }
    }

    /// Checks that the stream ended on a frame boundary (no truncated frame).
    public func finish() throws {
        if !atFrameBoundary {
            throw ZstdError(code: .corruptInput, message: "truncated input: the last frame is incomplete")
        }
    }
}
