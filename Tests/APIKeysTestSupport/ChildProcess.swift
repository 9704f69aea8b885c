import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, with the part of `Foundation.Process` the tests
/// use. Not `Process`: on Linux its `run()` reads `/proc/self/fd` with a 256-byte copy of each
/// directory entry, which now and then reads past glibc's buffer and crashes the whole test run
/// (swift-corelibs-foundation PR #5472, after Swift 6.3.1; seen here: SIGSEGV in
/// `Process.run()` under `runCommand`). Here the child closes every descriptor above 2 by
/// `posix_spawn_file_actions_addclosefrom_np`, and nothing is read from `/proc`.
public final class ChildProcess: @unchecked Sendable {
    public var executableURL: URL?
    public var arguments: [String] = []
    /// nil: this process's environment.
    public var environment: [String: String]?
    /// Each a `Pipe` (the child gets the matching end, the other end stays here) or a `FileHandle`.
    public var standardInput: Any?
    public var standardOutput: Any?
    public var standardError: Any?
    public private(set) var processIdentifier: Int32 = 0

    private let lock = NSLock()
    private var waitStatus: Int32?

    public init() {}

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not import.
    private static let addCloseFrom:
        (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
            guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else {
                return nil
            }
            return unsafeBitCast(
                symbol,
                to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
        }()

    public func run() throws {
        guard let path = executableURL?.path else { throw POSIXError(.ENOENT) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var childEnds: [FileHandle] = []
        for (target, stream) in [(Int32(0), standardInput), (1, standardOutput), (2, standardError)] {
            let handle: FileHandle?
            switch stream {
            case let pipe as Pipe: handle = target == 0 ? pipe.fileHandleForReading : pipe.fileHandleForWriting
            case let file as FileHandle: handle = file
            default: handle = nil
            }
            guard let handle else { continue }
            posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
            if stream is Pipe { childEnds.append(handle) }
        }
        guard let closeFrom = Self.addCloseFrom else { throw POSIXError(.ENOSYS) }
        _ = closeFrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Signals this process ignores (SIGPIPE) are not ignored by the child; none is blocked.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let environment = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EIO) }
        processIdentifier = pid
        // The child holds its ends now; closing ours lets a read see the end of its output.
        for handle in childEnds { try? handle.close() }
    }

    /// Whether the child has not exited yet (reaps it when it has).
    public var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard waitStatus == nil, processIdentifier != 0 else { return false }
        var status: Int32 = 0
        guard waitpid(processIdentifier, &status, WNOHANG) == processIdentifier else { return true }
        waitStatus = status
        return false
    }

    /// SIGTERM.
    public func terminate() {
        if isRunning { kill(processIdentifier, SIGTERM) }
    }

    public func waitUntilExit() {
        lock.lock()
        defer { lock.unlock() }
        guard waitStatus == nil, processIdentifier != 0 else { return }
        var status: Int32 = 0
        while waitpid(processIdentifier, &status, 0) == -1 && errno == EINTR {}
        waitStatus = status
    }

    /// The exit status, or the number of the signal that ended the child (as `Process` gives it).
    public var terminationStatus: Int32 {
        waitUntilExit()
        let status = lock.withLock { waitStatus ?? 0 }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : signal
    }
}
