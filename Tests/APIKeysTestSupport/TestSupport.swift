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
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
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

/// ``runCommand(_:_:environment:stdin:)`` off the cooperative thread pool, for async tests: a
/// blocking wait there would starve every other test of the (two-thread) pool.
public func runCommand(
    _ executable: URL, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil
) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(
                with: Result { try runCommand(executable, arguments, environment: environment, stdin: stdin) })
        }
    }
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
