import CZlib

/// A gzip stream that cannot be decoded, or one that decodes past the caller's limit.
public struct GzipError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        case corruptInput
        case outputTooLarge
        case library
    }

    public var code: Code
    public var message: String
    public var description: String { "gzip: \(message)" }
}

/// gzip (RFC 1952) through zlib.
public enum Gzip {
    /// Decodes a gzip stream (concatenated members included), refusing to produce more than `maxOutput` bytes.
    public static func decompress(_ input: [UInt8], maxOutput: Int) throws -> [UInt8] {
        var stream = z_stream()
        // 16 + MAX_WBITS: expect a gzip header and trailer.
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw GzipError(code: .library, message: "cannot initialise zlib")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var input = input
        let total = input.count
        var consumed = 0
        while true {
            let (status, produced, used) = input.withUnsafeMutableBytes { inBuf -> (Int32, Int, Int) in
                chunk.withUnsafeMutableBytes { outBuf in
                    stream.next_in = inBuf.baseAddress!.assumingMemoryBound(to: Bytef.self) + consumed
                    stream.avail_in = uInt(total - consumed)
                    stream.next_out = outBuf.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(outBuf.count)
                    let status = inflate(&stream, Z_NO_FLUSH)
                    return (status, outBuf.count - Int(stream.avail_out), total - consumed - Int(stream.avail_in))
                }
            }
            consumed += used
            output.append(contentsOf: chunk[0..<produced])
            if output.count > maxOutput {
                throw GzipError(code: .outputTooLarge, message: "decoded data exceeds the limit of \(maxOutput) bytes")
            }
            switch status {
            case Z_STREAM_END:
                if consumed < total {
                    // Another gzip member follows.
                    guard inflateReset(&stream) == Z_OK else {
                        throw GzipError(code: .library, message: "inflateReset failed")
                    }
                    continue
                }
                return output
            case Z_OK:
                if used == 0 && produced == 0 {
                    throw GzipError(code: .corruptInput, message: "truncated input: the gzip stream is incomplete")
                }
            case Z_BUF_ERROR:
                if consumed >= total {
                    throw GzipError(code: .corruptInput, message: "truncated input: the gzip stream is incomplete")
                }
            default:
                let reason = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw GzipError(code: .corruptInput, message: "not a valid gzip stream (\(reason))")
            }
        }
    }

    /// Encodes `input` as one gzip member.
    public static func compress(_ input: [UInt8], level: Int32 = Z_DEFAULT_COMPRESSION) throws -> [UInt8] {
        var stream = z_stream()
        guard
            deflateInit2_(
                &stream, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else {
            throw GzipError(code: .library, message: "cannot initialise zlib")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        var input = input
        let count = input.count
        let written = input.withUnsafeMutableBytes { inBuf in
            output.withUnsafeMutableBytes { outBuf -> Int in
                stream.next_in = inBuf.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_in = uInt(count)
                stream.next_out = outBuf.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(outBuf.count)
                _ = deflate(&stream, Z_FINISH)
                return outBuf.count - Int(stream.avail_out)
            }
        }
        output.removeLast(output.count - written)
        return output
    }
}
