import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Starting, finding and stopping the lab's processes.
public enum Processes {
    /// The result of a command run to completion.
    public struct Output: Sendable {
        public var status: Int32
        public var text: String
    }

    /// Runs a command to completion, capturing stdout and stderr together (through a temporary
    /// file, so a daemon the command leaves behind cannot hold our end open).
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 120) throws
        -> Output
    {
        let log = NSTemporaryDirectory() + "bcpipe-run-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log"
        defer { unlink(log) }
        let pid = try spawn(arguments, log: log, newSession: false, environment: environment)
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR {
                throw LabError("waiting for \(arguments[0]) failed: \(String(cString: strerror(errno)))")
            }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw LabError("\(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
            }
            usleep(5_000)
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: code, text: text)
    }

    /// ``run(_:environment:timeout:)`` on a thread of its own, for async callers: waiting for a
    /// process never holds one of the cooperative pool's threads (two on these machines), on
    /// which every other task of the caller's process depends.
    public static func output(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 120)
        async throws -> Output
    {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(
                    with: Result { try run(arguments, environment: environment, timeout: timeout) })
            }
            thread.start()
        }
    }

    /// Starts a long-running process in its own session (it outlives the command that started
    /// it), with stdin from /dev/null and stdout+stderr appended to `log`. Returns its pid.
    public static func spawnDetached(_ arguments: [String], log: String, environment: [String: String] = [:]) throws
        -> pid_t
    {
        try spawn(arguments, log: log, newSession: true, environment: environment)
    }

    static func spawn(_ arguments: [String], log: String, newSession: Bool, environment: [String: String] = [:]) throws
        -> pid_t
    {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        if newSession { posix_spawnattr_setflags(&attr, Int16(0x80)) }  // POSIX_SPAWN_SETSID
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let cArgs = arguments.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw LabError("cannot start \(arguments[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// True while a process with this pid exists (and is not a zombie).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            let state = stat[stat.index(close, offsetBy: 2)]
            return state != "Z" && state != "X"
        }
        return true
    }

    /// Sends SIGTERM, waits up to `grace` seconds, then SIGKILL. Returns when the process is gone.
    public static func stop(_ pid: pid_t, grace: Double = 10) {
        guard isAlive(pid) else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while isAlive(pid) && Date() < deadline {
            reap(pid)
            usleep(20_000)
        }
        if isAlive(pid) {
            kill(pid, SIGKILL)
            while isAlive(pid) {
                reap(pid)
                usleep(10_000)
            }
        }
    }

    /// Collects a child's exit status, if it is our child (no effect otherwise).
    static func reap(_ pid: pid_t) {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// The executable a process runs (`/proc/PID/exe`), without the " (deleted)" of a binary
    /// replaced since it started.
    static func executable(of pid: pid_t) -> String? {
        guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else {
            return nil
        }
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(" (deleted)".count)) : path
    }

    /// Whether `pid` runs one of `executables` (full paths, or bare names matched against the
    /// executable's file name) and its working directory or command line lies under `directory`:
    /// a process the lab started there, not another that reused a recorded pid.
    public static func isLabProcess(_ pid: pid_t, under directory: String, executables: Set<String>) -> Bool {
        processes(under: directory, executables: executables, candidates: [pid]) == [pid]
    }

    /// Pids of processes whose working directory or command line lies under `directory` — how
    /// the lab finds every process it started, PostgreSQL backends included (they run in their
    /// data directory). With `executables`, only processes running one of them (full paths, or
    /// bare names matched against the executable's file name).
    public static func processes(
        under directory: String, executables: Set<String>? = nil, candidates: [pid_t]? = nil
    ) -> [pid_t] {
        let root = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath().path
        // Not this process nor what started it (`timeout … bcpipe demo --dir D`, a shell).
        var spare: Set<pid_t> = [getpid()]
        var ancestor = getppid()
        while ancestor > 1, spare.insert(ancestor).inserted { ancestor = parent(of: ancestor) ?? 1 }
        var found: [pid_t] = []
        guard
            let entries = candidates?.map(String.init)
                ?? (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))
        else { return [] }
        for entry in entries {
            guard let pid = pid_t(entry), !spare.contains(pid) else { continue }
            if let executables {
                guard let exe = executable(of: pid),
                    executables.contains(exe) || executables.contains((exe as NSString).lastPathComponent)
                else { continue }
            }
            let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? ""
            var matches = cwd == root || cwd.hasPrefix(root + "/")
            if !matches, let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") {
                let text = String(decoding: cmd.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
                matches =
                    text.contains(" " + root + "/") || text.contains("=" + root + "/")
                    || text.hasSuffix(" " + root + " ")
                    || text.contains(" --dir " + root + " ")
            }
            if matches && isAlive(pid) { found.append(pid) }
        }
        return found
    }

    /// The parent of a process (`/proc/PID/stat`, the field after the state).
    static func parent(of pid: pid_t) -> pid_t? {
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: stat, as: UTF8.self)
        // The command name is in parentheses and may hold spaces: read after the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
    }

    /// Whether a TCP port on 127.0.0.1 can be bound right now.
    public static func isPortFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in.loopback(port: port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    public static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in.loopback(port: port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

extension Processes {
    /// The status of `GET path` on 127.0.0.1:port (HTTP/1.0, at most `timeout` seconds per wait),
    /// or nil when nothing answers with HTTP.
    public static func httpStatus(port: Int, path: String, timeout: Double = 2) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var wait = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in.loopback(port: port)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 12 else { return nil }
        // "HTTP/1.x NNN …"
        let line = String(decoding: buffer[..<n], as: UTF8.self)
        let parts = line.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/") else { return nil }
        return Int(parts[1])
    }
}

extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return addr
    }
}

/// A lab operation that failed, with what to do about it.
public struct LabError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
