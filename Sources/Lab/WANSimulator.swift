import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The WAN link simulator: a TCP proxy per cross-site route, in one poll loop.
///
/// - `up`: bytes flow both ways (with half-close).
/// - `refuse`: the route's listener is closed (new connections are refused) and every open
///   connection is reset (RST) on both sides.
/// - `blackhole`: nothing is forwarded and nothing is answered; connections made meanwhile are
///   accepted by the kernel but never reach the server. Held bytes flow again when the link
///   comes back, as TCP retransmission would deliver them. Clients notice only through their
///   own timeouts — exactly what bcpipe's timeouts must handle.
public final class WANSimulator {
    private let configPath: String
    private let ackPath: String
    private var config = WANConfiguration()
    private var configStamp: timespec?
    private var listeners: [Int: Int32] = [:]  // listen port → fd
    private var connections: [Connection] = []
    private var stopping = false

    private final class Connection {
        let route: WANRoute
        let client: Int32
        var upstream: Int32 = -1
        var connecting = false
        var toUpstream = ByteQueue()
        var toClient = ByteQueue()
        var clientEOF = false
        var upstreamEOF = false
        var sentUpstreamFIN = false
        var sentClientFIN = false
        var dead = false

        init(route: WANRoute, client: Int32) {
            self.route = route
            self.client = client
        }
    }

    public init(configPath: String, ackPath: String) {
        self.configPath = configPath
        self.ackPath = ackPath
    }

    /// Runs until SIGTERM or SIGINT.
    public func run() throws {
        signal(SIGPIPE, SIG_IGN)
        WANSimulator.installStopHandlers()
        try reloadIfChanged(force: true)
        while !WANSimulator.stopRequested {
            try reloadIfChanged(force: false)
            step(timeoutMilliseconds: 50)
        }
        for c in connections { closeBoth(c, reset: true) }
        for fd in listeners.values { close(fd) }
    }

    nonisolated(unsafe) static var stopRequested = false
    static func installStopHandlers() {
        signal(SIGTERM) { _ in WANSimulator.stopRequested = true }
        signal(SIGINT) { _ in WANSimulator.stopRequested = true }
    }

    // MARK: configuration

    private func reloadIfChanged(force: Bool) throws {
        var st = stat()
        guard stat(configPath, &st) == 0 else { return }
        let stamp = st.st_mtim
        if !force, let old = configStamp, old.tv_sec == stamp.tv_sec, old.tv_nsec == stamp.tv_nsec { return }
        guard let new = try? WANConfiguration.load(configPath) else { return }  // mid-write: next tick
        configStamp = stamp
        config = new
        apply()
        try? "\(config.generation)\n".write(toFile: ackPath, atomically: true, encoding: .utf8)
    }

    private func apply() {
        let wanted = Set(config.routes.filter { config.state(of: $0) != .refuse }.map(\.listen))
        for (port, fd) in listeners where !wanted.contains(port) {
            close(fd)
            listeners[port] = nil
        }
        for route in config.routes where wanted.contains(route.listen) && listeners[route.listen] == nil {
            if let fd = Self.listen(port: route.listen) { listeners[route.listen] = fd }
        }
        for c in connections {
            switch config.state(of: c.route) {
            case .refuse: closeBoth(c, reset: true)
            case .up: if c.upstream < 0 && !c.dead { startUpstream(c) }
            case .blackhole: break
            }
        }
        connections.removeAll { $0.dead }
    }

    // MARK: loop

    private func step(timeoutMilliseconds: Int32) {
        var fds: [pollfd] = []
        var owners: [(Connection?, Int)] = []  // (connection, 0 client / 1 upstream) or (nil, listen port)
        for (port, fd) in listeners {
            fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
            owners.append((nil, port))
        }
        for c in connections where !c.dead && config.state(of: c.route) == .up {
            var ce: Int16 = 0
            var ue: Int16 = 0
            if c.connecting {
                ue |= Int16(POLLOUT)
            } else if c.upstream >= 0 {
                if !c.clientEOF && c.toUpstream.hasRoom { ce |= Int16(POLLIN) }
                if !c.toUpstream.isEmpty { ue |= Int16(POLLOUT) }
                if !c.upstreamEOF && c.toClient.hasRoom { ue |= Int16(POLLIN) }
                if !c.toClient.isEmpty { ce |= Int16(POLLOUT) }
            }
            fds.append(pollfd(fd: c.client, events: ce, revents: 0))
            owners.append((c, 0))
            if c.upstream >= 0 {
                fds.append(pollfd(fd: c.upstream, events: ue, revents: 0))
                owners.append((c, 1))
            }
        }
        let n = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
        guard n > 0 else { return }
        for (k, p) in fds.enumerated() where p.revents != 0 {
            let (c, which) = owners[k]
            guard let c else {
                accept(onPort: which, fd: p.fd)
                continue
            }
            if c.dead { continue }
            if which == 1 && c.connecting {
                finishConnect(c)
                continue
            }
            if p.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                pump(c, fromClient: which == 0)
            }
            if !c.dead && p.revents & Int16(POLLOUT) != 0 {
                flush(c, toClient: which == 0)
            }
        }
        connections.removeAll { $0.dead }
    }

    private func accept(onPort port: Int, fd: Int32) {
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { return }
        Self.setNonBlocking(client)
        guard let route = config.routes.first(where: { $0.listen == port }) else {
            Self.reset(client)
            return
        }
        let c = Connection(route: route, client: client)
        connections.append(c)
        if config.state(of: route) == .up { startUpstream(c) }
        // In a black hole the connection waits, unanswered, until the link returns or the client gives up.
    }

    private func startUpstream(_ c: Connection) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else {
            closeBoth(c, reset: true)
            return
        }
        Self.setNonBlocking(fd)
        var addr = sockaddr_in.loopback(port: c.route.upstream)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        c.upstream = fd
        if r == 0 {
            c.connecting = false
        } else if errno == EINPROGRESS {
            c.connecting = true
        } else {
            closeBoth(c, reset: true)
        }
    }

    private func finishConnect(_ c: Connection) {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(c.upstream, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            // The server is down: the client sees its connection reset.
            closeBoth(c, reset: true)
        } else {
            c.connecting = false
        }
    }

    private func pump(_ c: Connection, fromClient: Bool) {
        let src = fromClient ? c.client : c.upstream
        let read = fromClient ? c.toUpstream.fill(from: src) : c.toClient.fill(from: src)
        if read == 0 {
            if fromClient { c.clientEOF = true } else { c.upstreamEOF = true }
        } else if read < 0 && errno != EAGAIN && errno != EWOULDBLOCK {
            closeBoth(c, reset: true)
            return
        }
        flush(c, toClient: !fromClient)
    }

    private func flush(_ c: Connection, toClient: Bool) {
        let dst = toClient ? c.client : c.upstream
        let ok = toClient ? c.toClient.drain(to: dst) : c.toUpstream.drain(to: dst)
        if !ok {
            closeBoth(c, reset: true)
            return
        }
        // Pass a half-close on once everything before it has been delivered.
        if c.clientEOF && c.toUpstream.isEmpty && !c.sentUpstreamFIN && c.upstream >= 0 {
            shutdown(c.upstream, Int32(SHUT_WR))
            c.sentUpstreamFIN = true
        }
        if c.upstreamEOF && c.toClient.isEmpty && !c.sentClientFIN {
            shutdown(c.client, Int32(SHUT_WR))
            c.sentClientFIN = true
        }
        if c.sentUpstreamFIN && c.sentClientFIN { closeBoth(c, reset: false) }
    }

    private func closeBoth(_ c: Connection, reset: Bool) {
        guard !c.dead else { return }
        c.dead = true
        if reset {
            Self.reset(c.client)
            if c.upstream >= 0 { Self.reset(c.upstream) }
        } else {
            close(c.client)
            if c.upstream >= 0 { close(c.upstream) }
        }
    }

    // MARK: sockets

    static func listen(port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in.loopback(port: port)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard ok, Glibc.listen(fd, 128) == 0 else {
            FileHandle.standardError.write(
                Data("wan: cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))\n".utf8))
            close(fd)
            return nil
        }
        setNonBlocking(fd)
        return fd
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Closes with RST instead of FIN (SO_LINGER 0).
    static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }
}

/// A fixed-size byte buffer between two sockets.
struct ByteQueue {
    private var storage = [UInt8](repeating: 0, count: 256 * 1024)
    private var head = 0
    private var tail = 0

    var isEmpty: Bool { head == tail }
    var hasRoom: Bool { tail < storage.count || head > 0 }

    /// Reads what fits from `fd`; returns read(2)'s result.
    mutating func fill(from fd: Int32) -> Int {
        if head == tail {
            head = 0
            tail = 0
        } else if tail == storage.count && head > 0 {
            storage.withUnsafeMutableBufferPointer { b in
                _ = memmove(b.baseAddress!, b.baseAddress! + head, tail - head)
            }
            tail -= head
            head = 0
        }
        let room = storage.count - tail
        guard room > 0 else {
            errno = EAGAIN
            return -1
        }
        let t = tail
        let n = storage.withUnsafeMutableBufferPointer { b in read(fd, b.baseAddress! + t, room) }
        if n > 0 { tail += n }
        return n
    }

    /// Writes what the socket takes; false on a hard error.
    mutating func drain(to fd: Int32) -> Bool {
        while head < tail {
            let h = head
            let count = tail - head
            let n = storage.withUnsafeBufferPointer { b in write(fd, b.baseAddress! + h, count) }
            if n > 0 {
                head += n
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return true
            } else {
                return false
            }
        }
        return true
    }
}
