import Foundation

/// What a finished command printed, and how it exited.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs `executable` with `arguments` to completion, feeding it `stdin` (its input is closed
/// either way) and collecting both outputs.
public func runCommand(
    _ executable: URL, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil
) throws -> CommandResult {
    let process = ChildProcess()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = privatePipe()
    let err = privatePipe()
    let input = privatePipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read stderr on another thread so that neither pipe can fill up and block the child.
    let errText = ErrorOutput()
    let reader = Thread {
        errText.value = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
    reader.start()
    let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    while !errText.done { usleep(1000) }
    return CommandResult(status: process.terminationStatus, stdout: stdout, stderr: errText.value)
}

/// A pipe for one child process's standard stream, not inherited by the processes that other
/// tests start meanwhile: a write end held by an unrelated child would keep a read from ever
/// seeing the end of the output. (The child's own end is dup2'd onto 0, 1 or 2, which clears
/// the close-on-exec flag there.)
public func privatePipe() -> Pipe {
    let pipe = Pipe()
    for handle in [pipe.fileHandleForReading, pipe.fileHandleForWriting] {
        _ = fcntl(handle.fileDescriptor, F_SETFD, FD_CLOEXEC)
    }
    return pipe
}

/// ``runCommand(_:_:environment:stdin:)`` off the cooperative thread pool, for async tests: a
/// blocking wait there would starve every other test of the (two-thread) pool.
public func runCommand(
    _ executable: URL, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil
) async throws -> CommandResult {
    try await offThePool { try runCommand(executable, arguments, environment: environment, stdin: stdin) }
}

/// Runs blocking `body` (a process to start or wait for, a blocking flush) on a thread of its
/// own. Not on the cooperative pool, which every other test's tasks need, and not on GCD's
/// global queue either: on Linux that shares its (two) threads with the pool, so a few blocked
/// work items starve every task of the run.
public func offThePool<T>(_ body: @escaping () throws -> T) async throws -> T {
    let box = UnsafeTransfer(body)
    return try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { UnsafeTransfer(try box.value()) }) }
        thread.start()
    }.value
}

/// Carries a value across one hand-off to another thread (the caller owns it).
public struct UnsafeTransfer<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

private final class ErrorOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var text: String?
    var value: String {
        get { lock.withLock { text ?? "" } }
        set { lock.withLock { text = newValue } }
    }
    var done: Bool { lock.withLock { text != nil } }
}

/// The root of this repository (where `proto/` and `Tests/interop/` are).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The Python with the official protobuf runtime that `make test` provides, if any.
public let interopPython = ProcessInfo.processInfo.environment["APIKEYS_INTEROP_PYTHON"].map(URL.init(fileURLWithPath:))

/// The directory of the built products (executables sit beside the test bundle).
public let productsDirectory = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()

/// A new empty directory under the system's temporary directory.
public func makeTemporaryDirectory(_ prefix: String = "apikeys-test") throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID())").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs `body` with a fresh directory that is removed afterwards.
public func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    let path = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// Runs `body` with a fresh directory that is removed afterwards.
public func withTemporaryDirectory<R>(_ body: (String) async throws -> R) async throws -> R {
    let path = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}
