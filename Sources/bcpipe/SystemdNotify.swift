import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's readiness protocol (`Type=notify`, sd_notify(3)): one datagram, `READY=1`, to the
/// socket named by `NOTIFY_SOCKET`, once the daemon serves. Without `NOTIFY_SOCKET` (run by hand,
/// by the lab) it does nothing. The socket path is read here, in the executable, and passed on as
/// the daemons' `onReady`.
struct SystemdNotify: Sendable {
    /// The socket's address (a path, or `@name` in the abstract namespace), if systemd gave one.
    let socket: String?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socket = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Tells systemd the daemon is ready. A failure is written to stderr and otherwise ignored:
    /// systemd then times the start out and says so.
    func ready() { send("READY=1\nSTATUS=serving") }

    /// Tells systemd the daemon is stopping (SIGTERM received, finishing in-flight work).
    func stopping() { send("STOPPING=1") }

    private func send(_ message: String) {
        guard let socket else { return }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return warn("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socket.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return warn("NOTIFY_SOCKET is longer than \(capacity - 1) bytes") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let sent = message.utf8CString.withUnsafeBufferPointer { text in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text.baseAddress, text.count - 1, 0, $0, length)
                }
            }
        }
        if sent < 0 { warn("sendto \(socket): \(String(cString: strerror(errno)))") }
    }

    private func warn(_ what: String) {
        FileHandle.standardError.write(Data("warning: cannot notify systemd (\(what))\n".utf8))
    }
}
