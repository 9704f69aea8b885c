import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The exclusive lock a running server holds on its data directory, so that a second server on
/// the same directory refuses to start (its index would never hear of the first one's changes).
///
/// An `flock` on `DIR/apikeyd.lock`, which also holds the holder's pid for the error message. The
/// kernel releases the lock when the process ends, however it ends: a stale file never blocks a
/// restart. `apikeyd admin-token` does not take it (it writes through SQLite's own locking).
final class DataDirectoryLock: Sendable {
    private let fd: Mutex<Int32?>

    /// Takes the lock on `directory`, or throws ``ServerError/dataDirectoryInUse(path:holderPID:)``.
    init(directory: String) throws {
        let path = directory + "/apikeyd.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ServerError.dataDirectory(path: directory, reason: String(cString: strerror(errno)))
        }
        guard Self.lock(fd) else {
            let holder = Self.readPID(fd)
            close(fd)
            throw ServerError.dataDirectoryInUse(path: directory, holderPID: holder)
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
        self.fd = Mutex(fd)
    }

    /// Releases the lock. Idempotent.
    func release() {
        fd.withLock { fd in
            guard let open = fd else { return }
            _ = ftruncate(open, 0)
            close(open)
            fd = nil
        }
    }

    /// Takes the `flock`. A lock whose file holds no pid is a holder starting, or a lock already
    /// released but still held for a moment by a child process forked by another thread (the
    /// descriptor lives on in it until its `exec` closes it): tried again for up to a second.
    private static func lock(_ fd: Int32) -> Bool {
        for attempt in 0..<20 {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return true }
            if readPID(fd) != nil || attempt == 19 { return false }
            usleep(50_000)
        }
        return false
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 16)
        let count = pread(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        return Int32(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
