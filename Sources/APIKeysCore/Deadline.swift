/// The moment by which a call must have taken effect, on the monotonic clock; `.never` for none.
///
/// A mutation checks it before its transaction begins and again just before it commits: a call
/// whose deadline passed is not committed and fails with ``KeyError/deadlineExceeded``, and one
/// that committed is answered with its real result however late, so that no reply hides a change.
public struct Deadline: Sendable, Hashable {
    /// nil: no deadline.
    public let instant: ContinuousClock.Instant?

    public init(_ instant: ContinuousClock.Instant?) { self.instant = instant }

    /// No deadline.
    public static let never = Deadline(nil)

    /// `milliseconds` from now; 0 means no deadline (the wire's convention).
    public static func after(milliseconds: UInt32) -> Deadline {
        milliseconds == 0 ? .never : Deadline(.now + .milliseconds(milliseconds))
    }

    /// True once the deadline is behind us.
    public var hasPassed: Bool { instant.map { ContinuousClock.now >= $0 } ?? false }

    /// Throws ``KeyError/deadlineExceeded`` once the deadline has passed.
    public func check() throws(KeyError) {
        if hasPassed { throw .deadlineExceeded }
    }
}
