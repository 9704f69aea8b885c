import NIOCore

/// How much every port reads from one connection per turn of its event loop: one read of at most
/// 4 KiB. A client pipelining as fast as it can then holds its loop for a few dozen requests at
/// a time, not the thousands that NIO's defaults (several reads of up to 64 KiB) decode and
/// answer at once; and a client that does not read its answers has at most one such read's
/// answers queued beyond its write buffer's high water mark.
package enum ReadLimits {
    package static let maxMessagesPerRead: UInt = 1
    package static var allocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 4096)
    }

    /// Sets both on `channel` (from its event loop), for a server whose bootstrap is not ours.
    package static func apply(to channel: any Channel) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.maxMessagesPerRead, value: maxMessagesPerRead)
        try options.setOption(.recvAllocator, value: allocator)
    }
}
