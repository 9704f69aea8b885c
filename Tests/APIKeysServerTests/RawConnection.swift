import APIKeysTestSupport
import APIKeysWire
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A plain blocking TCP socket to 127.0.0.1, for sending exactly the bytes a test wants.
final class RawConnection {
    private let fd: Int32

    /// `receiveBufferBytes`: a small kernel receive buffer, for a client that reads slowly;
    /// `source`: the loopback address to connect from (a client other than 127.0.0.1).
    init(port: Int, receiveTimeoutSeconds: Int = 5, receiveBufferBytes: Int32? = nil, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else {
                close(fd)
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EADDRNOTAVAIL)
            }
        }
        if var size = receiveBufferBytes {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .ECONNREFUSED)
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { return }
            offset += sent
        }
    }

    /// Sends what the kernel takes now without waiting; the count taken (0 when its buffer is full).
    func sendWithoutWaiting(_ bytes: ArraySlice<UInt8>) -> Int {
        let sent = bytes.withUnsafeBytes {
            Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        return max(0, sent)
    }

    /// Sends `envelope` as one frame.
    func send(_ envelope: Envelope) throws {
        let body = try envelope.serializedBytes()
        send(Self.frame(body))
    }

    static func frame(_ body: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) } + body
    }

    /// Reads exactly `count` bytes; nil if the connection closed (or timed out) first.
    func receive(_ count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = buffer[offset...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard got > 0 else { return nil }
            offset += got
        }
        return buffer
    }

    /// Reads until the peer closes the connection (or the receive timeout passes).
    func receiveToEnd() -> [UInt8] { receiveUntilClosed().bytes }

    /// ``receiveToEnd()`` as text, read off the cooperative pool (``offThePool(_:)``): a test
    /// waiting for answers that the server's tasks write must not hold one of Swift's few
    /// cooperative threads meanwhile (tests run in parallel, and a few such waits starve them).
    func answer() async throws -> String {
        try await offThePool { String(decoding: self.receiveToEnd(), as: UTF8.self) }
    }

    /// Reads until the peer closes the connection or the receive timeout passes; `closed` says
    /// which (an end of file or a reset, not a timeout).
    func receiveUntilClosed() -> (bytes: [UInt8], closed: Bool) {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return (all, true) }
            if got < 0 { return (all, errno != EAGAIN && errno != EWOULDBLOCK) }
            all += chunk[0..<got]
        }
    }

    /// Reads one reply frame; nil if the connection closed first.
    func receiveEnvelope() throws -> Envelope? {
        guard let header = receive(4) else { return nil }
        let length = header.reduce(0) { $0 << 8 | Int($1) }
        guard let body = receive(length) else { return nil }
        return try Envelope(serializedBytes: body)
    }

    /// True when bytes (or an end of file) arrive within `waitingMS`; nothing is read.
    func hasBytesToRead(waitingMS: Int32) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, waitingMS) > 0
    }

    /// True when the peer has closed the connection (a read returns end of file).
    func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    /// True when the peer closes the connection within `waitingMS` (bytes it sends are dropped).
    func isClosedByPeer(waitingMS: Int32) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, waitingMS) > 0 else { return false }
        var byte: UInt8 = 0
        let got = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
        return got == 0 || (got < 0 && errno != EAGAIN)
    }
}

/// A TCP listener on 127.0.0.1 that accepts connections (the kernel does, from its backlog) and
/// never reads or answers: a stand-in for a server that has hung.
final class RawListener {
    private let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EADDRINUSE)
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}
