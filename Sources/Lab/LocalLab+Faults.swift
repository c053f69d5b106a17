import Foundation
import Topology

#if canImport(Glibc)
    import Glibc
#endif

/// Faults the lab can inject beyond WAN links and site failures (for the chaos run and fault
/// tests): SIGKILL of one process, an immediate restart of a site's PostgreSQL server, a small
/// real disk under a collector's queue, a flipped byte in a queue segment.
extension LocalLab {
    /// One process the lab started.
    public enum Process: Sendable, CustomStringConvertible {
        case collector(String)
        case extractor(site: String)
        case coordinator(site: String)

        public var description: String {
            switch self {
            case .collector(let name): "collector \(name)"
            case .extractor(let site): "extractor of \(site)"
            case .coordinator(let site): "coordinator of \(site)"
            }
        }
    }

    func pidFile(_ process: Process) throws -> String {
        switch process {
        case .collector(let name): try collectorPIDFile(name)
        case .extractor(let site): siteDirectory(site) + "/run/extractor.pid"
        case .coordinator(let site): siteDirectory(site) + "/run/coordinator.pid"
        }
    }

    /// SIGKILLs one process and waits until it is gone; `restartStopped` (or `lab up`) starts it
    /// again. Returns false when it was not running.
    @discardableResult
    public func killProcess(_ process: Process) throws -> Bool {
        guard let pid = readPID(try pidFile(process)), Processes.isAlive(pid) else { return false }
        kill(pid, SIGKILL)
        while Processes.isAlive(pid) { usleep(5_000) }
        return true
    }

    /// Starts the witness and every collector, coordinator and extractor that is not running at a site whose
    /// server runs (a failed site stays down): what a process supervisor does.
    public func restartStopped(_ options: Options) throws {
        let state = try requireState()
        try startWitness(state, environment: options.collectorEnvironment)
        try startCollectors(state, environment: options.collectorEnvironment)
        try startCoordinators(state, environment: options.collectorEnvironment)
        if options.startExtractors {
            try startExtractors(state, environment: options.collectorEnvironment, sites: options.extractorSites)
        }
    }

    /// Stops a site's PostgreSQL server immediately (no checkpoint: crash recovery on start) and
    /// starts it again.
    public func restartServer(_ site: String) throws {
        let state = try requireState()
        guard let s = state.site(site) else { throw unknownSite(site, state) }
        let server = server(state, s)
        try server.stop(immediate: true)
        try server.start()
    }

    /// Where a collector keeps its disk queue.
    public func queueDirectory(collector name: String) throws -> String {
        let topology = try requireState().topology(directory: directory, viewpoint: nil)
        guard let c = topology.collector(named: name) else { throw LabError("unknown collector \(name)") }
        return c.queueDir
    }

    /// Puts a collector's queue on a real small disk of its own (a tmpfs of `bytes`, which needs
    /// root), keeping what is queued: the collector is stopped, its queue moved onto the new
    /// disk, and started again. `lab down` leaves the mount; `unmountQueueDisk` removes it.
    public func mountQueueDisk(collector name: String, bytes: Int, options: Options) throws {
        guard geteuid() == 0 else {
            throw LabError("a disk of its own for a collector's queue needs root (mount -t tmpfs)")
        }
        let queue = try queueDirectory(collector: name)
        try killProcess(.collector(name))
        let aside = queue + ".moving"
        try? FileManager.default.removeItem(atPath: aside)
        if FileManager.default.fileExists(atPath: queue) {
            try FileManager.default.moveItem(atPath: queue, toPath: aside)
        }
        try FileManager.default.createDirectory(atPath: queue, withIntermediateDirectories: true)
        let out = try Processes.run(["/bin/mount", "-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", queue])
        guard out.status == 0 else { throw LabError("mount -t tmpfs on \(queue) failed: \(out.text)") }
        if FileManager.default.fileExists(atPath: aside) {
            for item in try FileManager.default.contentsOfDirectory(atPath: aside) {
                try FileManager.default.moveItem(atPath: aside + "/" + item, toPath: queue + "/" + item)
            }
            try FileManager.default.removeItem(atPath: aside)
        }
        try restartStopped(options)
    }

    /// Unmounts a collector's queue disk (after `down`).
    public func unmountQueueDisk(collector name: String) {
        guard let queue = try? queueDirectory(collector: name) else { return }
        _ = try? Processes.run(["/bin/umount", "-l", queue])
    }

    /// Fills the disk under a collector's queue until `leaving` bytes are free (a file
    /// `filler` beside the queue); returns its path, to remove when the fault ends.
    public func fillQueueDisk(collector name: String, leaving: Int) throws -> String {
        let queue = try queueDirectory(collector: name)
        var fs = statvfs()
        guard statvfs(queue, &fs) == 0 else { throw LabError("statvfs \(queue): \(String(cString: strerror(errno)))") }
        let free = Int(fs.f_bavail) * Int(fs.f_frsize)
        let path = queue + "/filler"
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        guard fd >= 0 else { throw LabError("create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let size = max(0, free - leaving)
        guard size > 0 else { return path }
        let err = posix_fallocate(fd, 0, off_t(size))
        guard err == 0 else { throw LabError("fallocate \(size) bytes at \(path): \(String(cString: strerror(err)))") }
        return path
    }

    /// The newest segment of a collector's queue and its size now.
    public func newestQueueSegment(collector name: String) throws -> (path: String, size: Int)? {
        let segments = try queueDirectory(collector: name) + "/segments"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: segments)) ?? []).filter {
            $0.hasSuffix(".seg")
        }.sorted()
        guard let newest = files.last else { return nil }
        let path = segments + "/" + newest
        return (path, (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
    }

    /// Flips one byte of a collector's newest queue segment in what was appended after `since`
    /// (that segment and its size then, taken when the link was cut: not shipped yet), leaving the
    /// last frame alone; returns the segment and offset, or nil when too little was appended.
    public func flipQueueByte(collector name: String, since: (path: String, size: Int)?, random: UInt64) throws
        -> (String, Int)?
    {
        guard let now = try newestQueueSegment(collector: name) else { return nil }
        let from = since?.path == now.path ? since!.size + 32 : 64
        let to = now.size - 512
        guard to > from else { return nil }
        let offset = from + Int(random % UInt64(to - from))
        let fd = open(now.path, O_RDWR)
        guard fd >= 0 else { throw LabError("open \(now.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var byte: UInt8 = 0
        guard pread(fd, &byte, 1, off_t(offset)) == 1 else { throw LabError("read \(now.path) at \(offset)") }
        byte ^= 0x5A
        guard pwrite(fd, &byte, 1, off_t(offset)) == 1 else { throw LabError("write \(now.path) at \(offset)") }
        return (now.path, offset)
    }
}
