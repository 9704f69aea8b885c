import APIKeysCore
import APIKeysStore
internal import CSQLite
import Foundation

/// Consistent copies of a SQLite store, taken while its server serves and writes, and their
/// restore. `apikeyd backup` and `apikeyd restore` are built on it.
///
/// A copy is taken with SQLite's online backup API in one step, so from one read snapshot: what
/// was committed when it began, nothing after. It is written under a temporary name beside the
/// destination, checked (`PRAGMA integrity_check`, the audit trail's hash chain walked and
/// verified, the keys counted) and only then linked to its name, so the destination is either
/// absent or a whole, checked copy, also when the process is killed midway.
package enum SQLiteBackup {
    /// What a copy holds.
    package struct Copy: Sendable, Hashable {
        /// When the copy's snapshot was taken (the time it was begun, by the copying process).
        package var takenAtMS: Int64
        package var keys: Int
        /// The audit chain's head in the copy, and the links and events it verified.
        package var chainHead: AuditChain.Point
        package var links: Int
        package var events: Int
    }

    /// The name of the table a copy records its time in; dropped again by a restore.
    static let originTable = "apikeyd_backup_copy"

    /// Copies the store at `source` to `destination` (which must not exist) and checks the copy.
    /// Throws ``StoreError`` (``StoreError/Code/backup`` for a refusal or a copy that fails its
    /// checks); the destination is then left as it was.
    package static func backup(from source: String, to destination: String, clock: any WallClock) async throws
        -> Copy
    {
        guard FileManager.default.fileExists(atPath: source) else {
            throw StoreError.backup("there is no database at \(source)", path: source)
        }
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw StoreError.backup(
                "\(destination) exists already; a backup never overwrites a file", path: destination)
        }
        let takenAtMS = clock.nowMS()
        let partial = temporaryPath(beside: destination)
        defer { removeDatabaseFiles(partial) }
        try copyDatabase(from: source, to: partial) { db in
            try db.execute("CREATE TABLE \(originTable) (taken_at_ms INTEGER NOT NULL)")
            try db.execute("INSERT INTO \(originTable) VALUES (\(takenAtMS))")
        }
        let copy = try await check(partial, clock: clock)
        try publish(partial, as: destination)
        return copy
    }

    /// Puts the copy at `file` in place as the store at `databasePath`, after checking it as a
    /// backup is checked, and migrates it to this version's schema. A store already at
    /// `databasePath` is kept beside it as `…replaced-TIME` (with its WAL) when `replace` is
    /// set, else the restore is refused. The caller holds the data directory's lock (no server
    /// may have it open). Returns what the copy holds, its time included.
    package static func restore(from file: String, to databasePath: String, replace: Bool, clock: any WallClock)
        async throws -> Copy
    {
        guard FileManager.default.fileExists(atPath: file) else {
            throw StoreError.backup("there is no backup at \(file)", path: file)
        }
        let existing = FileManager.default.fileExists(atPath: databasePath)
        if existing && !replace {
            throw StoreError.backup(
                "\(databasePath) exists; restoring over a store needs --replace (it is then kept beside it)",
                path: databasePath)
        }
        let partial = temporaryPath(beside: databasePath)
        defer { removeDatabaseFiles(partial) }
        try copyDatabase(from: file, to: partial) { _ in }
        let copy = try await check(partial, clock: clock)
        let db = try SQLiteConnection(path: partial)
        try db.execute("DROP TABLE IF EXISTS \(originTable)")
        db.close()
        if existing {
            let kept = databasePath + ".replaced-\(clock.nowMS())"
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: databasePath + suffix) {
                guard rename(databasePath + suffix, kept + suffix) == 0 else {
                    throw StoreError.backup(
                        "cannot move the current store aside: \(String(cString: strerror(errno)))", path: databasePath)
                }
            }
        }
        try publish(partial, as: databasePath)
        return copy
    }

    /// Copies the database at `source` to a new file at `destination` in one backup step (one
    /// read snapshot), then lets `finish` write to the copy. The copy is readable by its owner
    /// only (it holds the hashes of every key and admin token), whatever the umask.
    private static func copyDatabase(
        from source: String, to destination: String, finish: (SQLiteConnection) throws -> Void
    ) throws {
        removeAbandonedCopies(beside: destination)
        let file = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard file >= 0 else {
            throw StoreError.backup(
                "cannot create \(destination): \(String(cString: strerror(errno)))", path: destination)
        }
        close(file)
        let from = try SQLiteConnection(path: source, create: false)
        defer { from.close() }
        let to = try SQLiteConnection(path: destination)
        defer { to.close() }
        try from.backup(into: to)
        try finish(to)
    }

    /// Checks the copy at `path`: SQLite's integrity check, then the store opened on it (which
    /// migrates it to this version's schema), its keys counted and its audit chain verified.
    private static func check(_ path: String, clock: any WallClock) async throws -> Copy {
        let db = try SQLiteConnection(path: path)
        let integrity = try db.statement("PRAGMA integrity_check").firstRow { $0.text(0) } ?? ""
        let takenAtMS =
            (try? db.statement("SELECT taken_at_ms FROM \(originTable)").firstRow { $0.int64(0) }) ?? nil
        db.close()
        guard integrity == "ok" else {
            throw StoreError.backup("the copy fails SQLite's integrity check: \(integrity)", path: path)
        }
        let service = try KeyService.open(path: path, clock: clock)
        do {
            let keys = service.index.count
            let chain = try await service.verifyAuditChain()
            await service.close(timeout: .seconds(10))
            return Copy(
                takenAtMS: takenAtMS ?? 0, keys: keys, chainHead: chain.head, links: chain.links, events: chain.events)
        } catch let error as AuditChainVerifier.Break {
            await service.close(timeout: .seconds(10))
            throw StoreError.backup("the copy's audit chain does not verify: link \(error.position) \(error.reason)")
        } catch {
            await service.close(timeout: .seconds(10))
            throw error
        }
    }

    /// Gives the checked copy at `partial` its name, atomically and never over an existing file
    /// (`link`, then the temporary name removed), and makes both durable.
    private static func publish(_ partial: String, as destination: String) throws {
        let file = open(partial, O_RDONLY | O_CLOEXEC)
        if file >= 0 {
            _ = fsync(file)
            close(file)
        }
        guard link(partial, destination) == 0 else {
            throw StoreError.backup(
                "cannot create \(destination): \(String(cString: strerror(errno)))", path: destination)
        }
        let directory = open((destination as NSString).deletingLastPathComponent.nonEmpty ?? ".", O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }

    /// A name beside `path` that no other process uses: hidden, with this process's id.
    private static func temporaryPath(beside path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent.nonEmpty ?? "."
        return directory + "/." + (path as NSString).lastPathComponent + ".partial-\(getpid())"
    }

    /// Removes the temporary copies that backups or restores killed midway left in the directory
    /// of `path` (named `.NAME.partial-PID`, with SQLite's `-wal`/`-shm`/`-journal` beside them),
    /// once their process is gone; a main file only when it is empty or a SQLite database.
    private static func removeAbandonedCopies(beside path: String) {
        let directory = (path as NSString).deletingLastPathComponent.nonEmpty ?? "."
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let match = name.wholeMatch(of: /\..+\.partial-([0-9]{1,9})(-wal|-shm|-journal)?/),
                let pid = Int32(match.1), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            let file = directory + "/" + name
            if match.2 == nil && !isEmptyOrSQLite(file) { continue }
            unlink(file)
        }
    }

    private static func isEmptyOrSQLite(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let header = (try? handle.read(upToCount: 16)) ?? Data()
        return header.isEmpty || header == Data("SQLite format 3\u{0}".utf8)
    }

    private static func removeDatabaseFiles(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}
