import APIKeysCore
import APIKeysStore
import APIKeysWire
import NIOCore

/// One connection's Check calls from frame to reply: decoded by its ``CheckCallCodec``, decided
/// by the service with the secret the connection presented last remembered
/// (``PresentedSecretMemo``), counted in the loop's tally, and answered into the outbound
/// buffer. A request that repeats the previous one byte for byte keeps the previous one's
/// ``PreparedCheck`` (validated, permissions as a mask). A check answered alike the one before
/// (``CheckOutcome/answersAlike(_:)``: the same key state, decision and retry) gets the previous
/// reply's bytes again under its own call id, without a CheckResponse being made. Not
/// thread-safe: one per connection, on its event loop.
package final class CheckReplier {
    /// Decodes every call of the connection (Check and the others) with one reused arena.
    package let codec = CheckCallCodec()
    /// The service that decides every check of the connection.
    private let service: KeyService
    private let secretMemo = PresentedSecretMemo()
    /// The previous request, prepared (nil: none, or it was refused).
    private var recentRequest: PreparedCheck?
    /// The outcome whose reply `codec` wrote last; nil when none, or when the last write failed.
    private var recentOutcome: CheckOutcome?

    package init(service: KeyService) { self.service = service }

    /// Decides `check` and appends its reply frame to `buffer`; throws what the service throws
    /// (no reply written), for the caller to answer as an error. `repeated`: the codec decoded
    /// the same request bytes as for the previous check (``CheckCallCodec/Call``).
    package func answer(
        callID: UInt64, _ check: CheckRequest, repeated: Bool, tally: CheckTally?, to buffer: inout ByteBuffer
    ) throws {
        _ = try ServerMetrics.measured(tally) {
            let outcome = try service.check(
                secret: check.key, prepared(check, repeated: repeated), memo: secretMemo)
            if let recentOutcome, outcome.answersAlike(recentOutcome),
                codec.repeatCheckReply(callID: callID, to: &buffer)
            {
                return outcome
            }
            recentOutcome = nil
            try codec.writeCheckReply(callID: callID, response: CheckResponse(outcome), to: &buffer)
            recentOutcome = outcome
            return outcome
        }
    }

    /// `check` prepared by the service: the previous request's when it is the same request.
    private func prepared(_ check: CheckRequest, repeated: Bool) throws -> PreparedCheck {
        if repeated, let recentRequest { return recentRequest }
        recentRequest = nil
        let prepared = try service.prepare(
            permissions: check.permissions, resource: check.resource, clientAddress: check.clientAddress)
        recentRequest = prepared
        return prepared
    }
}
