import APIKeysCore
import NIOHTTP1

/// Where an HTTP port takes a request's client address from: the peer, unless the peer is a
/// trusted proxy; then the forwarding header that proxy writes, walked from the right.
///
/// Proxies append to `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, Envoy, Traefik), so
/// the header's first entries are whatever the client wrote. The walk starts at the right, skips
/// the addresses of trusted proxies and takes the first untrusted one: the address that the
/// last trusted proxy saw. A malformed entry ends the walk at the last good address; a header
/// sent by an untrusted peer is ignored (``Resolved/ignoredHeader``).
public struct ClientAddressPolicy: Sendable, Hashable {
    /// Which header the trusted proxies write the chain of addresses into.
    public enum Header: String, Sendable, Hashable, CaseIterable {
        /// `X-Forwarded-For: client, proxy1, proxy2`.
        case xForwardedFor = "x-forwarded-for"
        /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`.
        case forwarded
    }

    /// The peers whose forwarding header is believed.
    public var trustedProxies: [IPNetwork]
    public var header: Header

    /// Loopback only: a proxy on the same machine.
    public static let loopback = [IPNetwork("127.0.0.0/8")!, IPNetwork("::1/128")!]

    public init(trustedProxies: [IPNetwork] = Self.loopback, header: Header = .xForwardedFor) {
        self.trustedProxies = trustedProxies
        self.header = header
    }

    /// A client address and how it was found.
    public struct Resolved: Sendable, Hashable {
        public var address: String
        /// An untrusted peer sent a forwarding header, which was not believed.
        public var ignoredHeader: Bool
    }

    /// Whether `address` (as ``IPNetwork/address(_:)`` reads it) is a trusted proxy's.
    public func trusts(_ address: String) -> Bool {
        guard let bits = IPNetwork.address(address) else { return false }
        return trustedProxies.contains { $0.contains(bits) }
    }

    /// The client address of a request from `peer` carrying `headers`.
    public func resolve(peer: String, headers: HTTPHeaders) -> Resolved {
        let values = headers[header.rawValue]
        guard !values.isEmpty else { return Resolved(address: peer, ignoredHeader: false) }
        guard trusts(peer) else { return Resolved(address: peer, ignoredHeader: true) }
        let entries = values.flatMap {
            header == .xForwardedFor ? Self.forwardedForEntries($0) : Self.forwardedEntries($0)
        }
        var address = peer
        for entry in entries.reversed() {
            guard let entry, IPNetwork.address(entry) != nil else { break }
            address = entry
            if !trusts(entry) { break }
        }
        return Resolved(address: address, ignoredHeader: false)
    }

    /// The entries of one `X-Forwarded-For` value.
    static func forwardedForEntries(_ value: String) -> [String?] {
        value.split(separator: ",", omittingEmptySubsequences: false).map {
            let entry = $0.trimmingOptionalWhitespace
            return entry.isEmpty ? nil : String(entry)
        }
    }

    /// The `for=` node of each element of one RFC 7239 `Forwarded` value, unquoted; nil for an
    /// element without one, or whose node is `unknown` or obfuscated (`_hidden`).
    static func forwardedEntries(_ value: String) -> [String?] {
        var elements: [[Substring]] = [[]]
        var pair = ""
        var quoted = false
        func endPair() {
            elements[elements.count - 1].append(Substring(pair))
            pair = ""
        }
        for character in value {
            if quoted {
                if character == "\"" { quoted = false } else { pair.append(character) }
                continue
            }
            switch character {
            case "\"": quoted = true
            case ";": endPair()
            case ",":
                endPair()
                elements.append([])
            default: pair.append(character)
            }
        }
        endPair()
        return elements.map { pairs in
            for pair in pairs {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "for" else {
                    continue
                }
                let node = parts[1].trimmingCharacters(in: .whitespaces)
                return IPNetwork.address(node) == nil ? nil : node
            }
            return nil
        }
    }
}
