import APIKeysClient
import APIKeysCore
import ArgumentParser

/// `--rate 100/s` and `--burst 200` as a key's rate limit.
enum RateArgument {
    /// The limit `rate` and `burst` stand for; nil without `rate`. With `clearing`, `--rate none`
    /// is the request to remove the limit (0 requests).
    static func limit(rate: String?, burst: UInt32?, clearing: Bool = false) throws -> RateLimit? {
        guard let rate else {
            if burst != nil { throw ValidationError("--burst needs --rate") }
            return nil
        }
        if clearing, rate == "none" {
            if burst != nil { throw ValidationError("--burst does not go with --rate none") }
            return RateLimit(requests: 0)
        }
        guard let parsed = KeyRateLimit(text: rate) else {
            throw ValidationError("--rate \(rate): not a rate like 100/s, 6000/m, 10000/h or 500/d")
        }
        return RateLimit(requests: parsed.requests, periodSeconds: parsed.periodSeconds, burst: burst ?? 0)
    }

    static let rateHelp = ArgumentHelp(
        "Allowed checks at most this often, counted by each server: 100/s, 6000/m, 10000/h, 500/d.", valueName: "rate")
    static let burstHelp = ArgumentHelp(
        "With --rate: how many checks may come at once (default: the rate's count).", valueName: "count")
}
