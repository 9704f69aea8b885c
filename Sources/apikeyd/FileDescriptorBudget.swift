import ArgumentParser
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Makes room for every connection the ports may hold, and some to spare: a full HTTP port must
/// not take the descriptors the RPC port, the database and the audit writer need.
enum FileDescriptorBudget {
    /// Descriptors kept for everything but connections: the database and its journal, the
    /// listening sockets, the data directory's lock, logs, a PostgreSQL pool, the event loops.
    static let reserved = 256

    /// Raises the soft limit of open files (up to the hard one) to hold `rpcConnections` and
    /// `httpConnections` and ``reserved``; throws one clear line when the hard limit is lower.
    static func reserve(rpcConnections: Int, httpConnections: Int, logger: Logger) throws {
        let needed = rpcConnections + httpConnections + reserved
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur >= rlim_t(needed) { return }
        guard limit.rlim_max >= rlim_t(needed) else {
            throw ValidationError(
                "--max-connections \(rpcConnections) and --max-http-connections \(httpConnections) need \(needed) open files with \(reserved) to spare; the limit is \(limit.rlim_max) (raise it, e.g. LimitNOFILE= or ulimit -n, or lower the limits)"
            )
        }
        let before = limit.rlim_cur
        limit.rlim_cur = rlim_t(needed)
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            throw ValidationError("cannot raise the open files limit from \(before) to \(needed)")
        }
        logger.info("open files limit raised", metadata: ["from": "\(before)", "to": "\(needed)"])
    }
}
