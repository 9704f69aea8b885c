import APIKeysStore
import Foundation
import Logging

/// The server's data directory: the database and, on first start, the admin token file.
enum DataDirectory {
    /// Creates `path` (mode 0700) if it does not exist, and checks that it is a usable directory
    /// that only its owner can read: a group- or world-readable one is made 0700, and so are the
    /// files in it made 0600 (the database, its WAL and SHM, the admin token); from here on this
    /// process creates files for its owner only (umask 077). Throws
    /// ``ServerError/dataDirectory(path:reason:)`` with the system's reason, also when the modes
    /// cannot be changed (a directory of another user).
    static func prepare(_ path: String) throws {
        umask(0o077)
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                let posix = (error as? CocoaError)?.underlying as? POSIXError
                let reason = posix.map { String(cString: strerror($0.code.rawValue)) } ?? "\(error)"
                throw ServerError.dataDirectory(path: path, reason: reason)
            }
        } else if !isDirectory.boolValue {
            throw ServerError.dataDirectory(path: path, reason: "it is not a directory")
        }
        guard access(path, R_OK | W_OK | X_OK) == 0 else {
            throw ServerError.dataDirectory(path: path, reason: String(cString: strerror(errno)))
        }
        try restrict(path, to: 0o700)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            var info = stat()
            let file = path + "/" + name
            guard lstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            try restrict(file, to: 0o600)
        }
    }

    /// Takes group and other permissions off `path` when it has any.
    private static func restrict(_ path: String, to mode: mode_t) throws {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & 0o077 != 0 else { return }
        guard chmod(path, mode) == 0 else {
            throw ServerError.dataDirectory(
                path: path,
                reason:
                    "readable by others and cannot be made \(String(mode, radix: 8)): \(String(cString: strerror(errno)))"
            )
        }
    }

    /// When the store has no admin token yet, creates one named `bootstrap` and writes it to
    /// `path`, readable by the owner only. Logs where it is, never the token. Replicas starting
    /// together on one empty database: one creates it (the name is unique), the others find it.
    static func bootstrapAdminToken(service: KeyService, path: String, logger: Logger) async throws {
        guard try await service.adminTokenNames().isEmpty else { return }
        let token = KeyService.adminTokenFormat.generate()
        do {
            try await service.createAdminToken(name: "bootstrap", token: token, actor: "apikeyd (first start)")
        } catch {
            // An error of unknown outcome may hide a commit: then the token is ours to write out.
            if try await service.adminTokenName(for: token) == nil {
                guard try await service.adminTokenNames().isEmpty else {
                    logger.notice("another replica created the first admin token")
                    return
                }
                throw error
            }
        }
        try writeOwnerOnly(token + "\n", to: path)
        logger.notice("created the first admin token", metadata: ["file": "\(path)", "name": "bootstrap"])
    }

    /// Writes `text` to `path`, replacing it, with mode 0600 from the moment it exists.
    static func writeOwnerOnly(_ text: String, to path: String) throws {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
    }
}
