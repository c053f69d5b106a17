import Foundation
import Synchronization

/// The load run's HTTP client: one blocking HTTP/1.1 keep-alive connection per collector, used
/// by one thread that posts a source's batches in order. URLSession moved each 1 MB body through
/// libdispatch sources and eventfd wake-ups and took more CPU than the collectors on these two
/// shared cores; a socket written and read directly costs a few system calls a request.
///
/// `@unchecked Sendable`: handed to its one sender thread, the only user of its socket.
final class BlockingPoster: @unchecked Sendable {
    let host: String
    let port: UInt16
    let totals: LoadTotals
    private var fd: Int32 = -1

    /// `base`: `http://host:port`.
    init(base: String, totals: LoadTotals) {
        let hostPort = base.replacingOccurrences(of: "http://", with: "").split(separator: ":")
        host = String(hostPort[0])
        port = UInt16(hostPort[1])!
        self.totals = totals
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Posts one NDJSON batch until it is answered 200 (or 400: lines rejected), waiting out 503
    /// back-pressure and reconnecting after a broken connection, for at most `patience` seconds.
    func post(_ body: [UInt8], patience: Double = 60) {
        let deadline = Date().addingTimeInterval(patience)
        var delay = 0.05
        while Date() < deadline {
            let started = Date()
            guard let (status, answer, retryAfter) = exchange(body) else {
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 2)
                continue
            }
            switch status {
            case 200, 400:
                let json = (try? JSONSerialization.jsonObject(with: Data(answer))) as? [String: Any] ?? [:]
                let latency = Date().timeIntervalSince(started)
                totals.record {
                    $0.accepted += json["accepted"] as? Int ?? 0
                    $0.duplicates += json["duplicates"] as? Int ?? 0
                    $0.rejected += (json["rejected"] as? [Any])?.count ?? 0
                    $0.latencies.append(latency)
                }
                return
            case 503:
                totals.record { $0.backPressure += 1 }
                Thread.sleep(forTimeInterval: retryAfter ?? delay)
                delay = min(delay * 2, 2)
            default:
                totals.record { $0.errors += 1 }
                print(
                    "load: \(host):\(port) answered \(status): \(String(decoding: answer.prefix(300), as: UTF8.self))")
                return
            }
        }
        totals.record { $0.unanswered += 1 }
    }

    /// One request and its answer (status, body, Retry-After), or nil if the connection failed
    /// (it is closed, and the next call connects again).
    private func exchange(_ body: [UInt8]) -> (Int, [UInt8], Double?)? {
        if fd < 0, !connectSocket() { return nil }
        let head = Array(
            "POST /v1/events HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(body.count)\r\n\r\n"
                .utf8)
        guard writeAll(head), writeAll(body), let answer = readAnswer() else {
            close(fd)
            fd = -1
            return nil
        }
        return answer
    }

    private func connectSocket() -> Bool {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { return false }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(s)
            return false
        }
        fd = s
        return true
    }

    private func writeAll(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
    }

    /// Reads one answer: the head up to the blank line, then Content-Length bytes of body.
    private func readAnswer() -> (Int, [UInt8], Double?)? {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        func fill() -> Bool {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            guard n > 0 else { return false }
            buffer += chunk[0..<n]
            return true
        }
        let separator: [UInt8] = [13, 10, 13, 10]
        var headEnd: Int?
        while headEnd == nil {
            guard fill() else { return nil }
            headEnd = buffer.firstRange(of: separator)?.upperBound
        }
        let head = String(decoding: buffer[0..<headEnd!], as: UTF8.self).split(separator: "\r\n")
        guard let statusLine = head.first, statusLine.split(separator: " ").count >= 2,
            let status = Int(statusLine.split(separator: " ")[1])
        else { return nil }
        var length = 0
        var retryAfter: Double?
        for line in head.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0].lowercased() {
            case "content-length": length = Int(parts[1]) ?? 0
            case "retry-after": retryAfter = Double(parts[1])
            default: break
            }
        }
        while buffer.count - headEnd! < length {
            guard fill() else { return nil }
        }
        return (status, Array(buffer[headEnd!..<(headEnd! + length)]), retryAfter)
    }
}

/// What the load run's posters counted, over all collectors.
final class LoadTotals: Sendable {
    struct Counts {
        var accepted = 0
        var duplicates = 0
        var rejected = 0
        var backPressure = 0
        var errors = 0
        var unanswered = 0
        var latencies: [Double] = []
    }
    private let counts = Mutex(Counts())
    func record(_ change: (inout Counts) -> Void) { counts.withLock { change(&$0) } }
    var value: Counts { counts.withLock { $0 } }
}

/// Batches from a source's generator thread to one collector's sender thread, in order, at most
/// `capacity` waiting (the generator waits for room).
/// `@unchecked Sendable`: its state is behind `condition`.
final class BatchQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [[UInt8]] = []
    private var finished = false
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func put(_ item: [UInt8]) {
        condition.lock()
        while items.count >= capacity { condition.wait() }
        items.append(item)
        condition.broadcast()
        condition.unlock()
    }

    /// The next batch, or nil once finished and empty.
    func take() -> [UInt8]? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty && !finished { condition.wait() }
        guard !items.isEmpty else { return nil }
        let item = items.removeFirst()
        condition.broadcast()
        return item
    }

    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Runs `body` on a thread of its own (it blocks) and waits for it without holding a thread of
/// the concurrency pool.
func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            body()
            done.resume()
        }
        thread.name = name
        thread.start()
    }
}
