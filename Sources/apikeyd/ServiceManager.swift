#if canImport(Glibc)
    import Glibc
#endif
import Foundation
import ServiceLifecycle

/// systemd's readiness protocol (`sd_notify`) without libsystemd: a datagram to the socket named
/// by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Nothing when it is not set.
enum ServiceManager {
    /// Sends `state` (`READY=1`, `STOPPING=1`); a failure is ignored, as sd_notify's callers do.
    static func notify(_ state: String) {
        guard let target = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !target.isEmpty else { return }
        var path = Array(target.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + path.count)
        let bytes = Array(state.utf8)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), address, length) }
            }
        }
    }

    /// A service that tells systemd `STOPPING=1` as soon as the graceful shutdown begins.
    struct StoppingNotifier: Service {
        func run() async throws {
            try? await gracefulShutdown()
            ServiceManager.notify("STOPPING=1")
        }
    }
}
