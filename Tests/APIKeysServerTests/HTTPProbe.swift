import APIKeysTestSupport
import Foundation

/// A minimal HTTP/1.1 client for tests: one request per connection (`Connection: close`), read
/// to the end. Blocking; the async form runs it off the cooperative pool.
struct HTTPProbe {
    struct Reply {
        var status: Int
        /// Header names in lower case.
        var headers: [String: String]
        var body: String
    }

    static func request(
        port: Int, method: String = "GET", path: String, headers: [String: String] = [:], body: String? = nil,
        source: String? = nil
    ) async throws -> Reply {
        try await offThePool {
            try requestBlocking(port: port, method: method, path: path, headers: headers, body: body, source: source)
        }
    }

    static func requestBlocking(
        port: Int, method: String, path: String, headers: [String: String], body: String? = nil, source: String? = nil
    ) throws -> Reply {
        let connection = try RawConnection(port: port, receiveTimeoutSeconds: 10, source: source)
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let body { text += "Content-Length: \(body.utf8.count)\r\n\r\n" + body } else { text += "\r\n" }
        connection.send(Array(text.utf8))
        let response = connection.receiveToEnd()
        let whole = String(decoding: response, as: UTF8.self)
        guard let split = whole.range(of: "\r\n\r\n") else { throw POSIXError(.EBADMSG) }
        let head = whole[..<split.lowerBound].split(separator: "\r\n")
        guard let statusLine = head.first, let status = Int(statusLine.split(separator: " ")[1]) else {
            throw POSIXError(.EBADMSG)
        }
        var fields: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = String(whole[split.upperBound...])
        if fields["transfer-encoding"] == "chunked" { body = dechunk(body) }
        return Reply(status: status, headers: fields, body: body)
    }

    private static func dechunk(_ text: String) -> String {
        var rest = Substring(text)
        var out = ""
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
            let start = lineEnd.upperBound
            let bytes = Array(rest[start...].utf8)
            out += String(decoding: bytes.prefix(size), as: UTF8.self)
            rest = Substring(String(decoding: bytes.dropFirst(size + 2), as: UTF8.self))
        }
        return out
    }
}
