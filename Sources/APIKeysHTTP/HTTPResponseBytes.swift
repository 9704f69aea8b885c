import NIOCore
import NIOHTTP1

extension ByteBuffer {
    /// Appends `answer` as an HTTP/1.1 response: status line, its headers, `Content-Length`,
    /// `Connection: close` when `close` (`Connection: keep-alive` when `keepAlive`, for an
    /// HTTP/1.0 peer), and the body unless `omitBody` (the answer to a HEAD request).
    ///
    /// Every response of the HTTP port is written here, without NIO's response encoder: what
    /// it would add per response (a pipeline hop per part, header validation as a separate
    /// pass) is the port's hot path. The validation stays: a header name or value holding CR,
    /// LF or NUL, which would split the response, appends nothing and returns false.
    mutating func writeHTTPResponse(_ answer: HTTPResponder.Answer, omitBody: Bool, close: Bool, keepAlive: Bool)
        -> Bool
    {
        guard answer.headers.allSatisfy({ Self.isFieldSafe($0.name) && Self.isFieldSafe($0.value) }) else {
            return false
        }
        writeStaticString("HTTP/1.1 ")
        writeString(String(answer.status.code))
        writeStaticString(" ")
        writeString(answer.status.reasonPhrase)
        writeStaticString("\r\n")
        for (name, value) in answer.headers {
            writeString(name)
            writeStaticString(": ")
            writeString(value)
            writeStaticString("\r\n")
        }
        writeStaticString("Content-Length: ")
        writeString(String(answer.body.readableBytes))
        if close {
            writeStaticString("\r\nConnection: close")
        } else if keepAlive {
            writeStaticString("\r\nConnection: keep-alive")
        }
        writeStaticString("\r\n\r\n")
        if !omitBody { writeImmutableBuffer(answer.body) }
        return true
    }

    private static func isFieldSafe(_ text: String) -> Bool {
        !text.utf8.contains { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }
    }
}
