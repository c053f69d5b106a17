import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Files the commands write for the user (`gen --out`, `demo --report`).
enum OutputFile {
    /// Opens `path` for writing in place, truncated: a symlink is followed and the file it names
    /// is written, a device stays a device. (FileManager and `write(toFile:atomically:)` write a
    /// temporary file and rename it over the path: a symlink was replaced by a regular file, and
    /// as root `--out /dev/null` replaced the device.)
    ///
    /// #### Errors
    /// A `ValidationError` naming the path and the reason when it cannot be opened.
    static func open(_ path: String, what: String) throws -> FileHandle {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ValidationError("cannot write \(path): \(String(cString: strerror(errno))); give \(what)")
        }
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Writes `text` to `path` in place (see ``open(_:what:)``).
    static func write(_ text: String, to path: String, what: String) throws {
        let handle = try open(path, what: what)
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
    }
}
