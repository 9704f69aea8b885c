import APIKeysCore
import Foundation
import NIOCore
import NIOHTTP1

extension ByteBuffer {
    /// Appends `answer` as an HTTP/1.1 response: status line, its headers and its key's,
    /// `Content-Length`, `Connection: close` when `close` (`Connection: keep-alive` when
    /// `keepAlive`, for an HTTP/1.0 peer), and the body unless `omitBody` (the answer to a HEAD
    /// request).
    ///
    /// Every response of the HTTP port is written here, without NIO's response encoder: what
    /// it would add per response (a pipeline hop per part, header validation as a separate
    /// pass) is the port's hot path. The validation stays: a header name or value holding CR,
    /// LF or NUL, which would split the response, appends nothing and returns false.
    mutating func writeHTTPResponse(_ answer: HTTPResponder.Answer, omitBody: Bool, close: Bool, keepAlive: Bool)
        -> Bool
    {
        guard answer.headers.allSatisfy({ Self.isFieldSafe($0.name) && Self.isFieldSafe($0.value) }),
            answer.key.map({ Self.isFieldSafe($0.id) }) ?? true
        else {
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
        if let key = answer.key {
            writeStaticString("X-Key-Id: ")
            writeString(key.id)
            writeStaticString("\r\nX-Key-Name: ")
            writeString(HeaderValue.safe(key.name))
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

/// A connection's last allowed forward-auth response, written again while the answers name the
/// same key state: a state is immutable (a change makes a new one), so the same instance means
/// the same `X-Key-Id` and `X-Key-Name`. Allowed answers are most of what the port writes, and a
/// connection (a proxy's keep-alive one included) mostly carries one key.
package struct AllowedResponseMemo {
    private var key: KeyCheckState?
    private var bytes = ByteBuffer()

    package init() {}

    /// Appends `answer` to `buffer` and returns true when it is an allowed answer on a connection
    /// kept open (its bytes remembered for the next); false, appending nothing, for any other.
    package mutating func write(
        _ answer: HTTPResponder.Answer, close: Bool, keepAlive: Bool, to buffer: inout ByteBuffer
    )
        -> Bool
    {
        guard let key = answer.key, answer.status == .ok, answer.headers.isEmpty, answer.body.readableBytes == 0,
            !close, !keepAlive
        else { return false }
        if self.key.map({ !$0.isSameInstance(as: key) }) ?? true {
            self.key = nil
            bytes.clear()
            guard bytes.writeHTTPResponse(answer, omitBody: false, close: false, keepAlive: false) else { return false }
            self.key = key
        }
        buffer.writeImmutableBuffer(bytes)
        return true
    }
}

/// Header values written from what users chose (key names, permission names).
enum HeaderValue {
    /// `value` as a header value: printable ASCII, the rest percent-encoded. A value that needs no
    /// encoding (the usual one) is returned as it is.
    static func safe(_ value: String) -> String {
        if value.utf8.allSatisfy({ headerBytes[Int($0)] }) { return value }
        return value.addingPercentEncoding(withAllowedCharacters: headerCharacters) ?? ""
    }

    /// ``headerCharacters`` by byte (every byte of 0x80 and above is false).
    private static let headerBytes: [Bool] = (0..<256).map { byte in
        byte < 0x80 && headerCharacters.contains(Unicode.Scalar(UInt8(byte)))
    }

    private static let headerCharacters = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !#$&'()*+,-./:;=?@[]_~")
}
