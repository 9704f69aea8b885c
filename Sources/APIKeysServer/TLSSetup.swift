import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// Where the server's TLS material is: PEM files, re-read by ``ServerTLS/reload()``.
public struct TLSFiles: Sendable, Hashable {
    /// The certificate chain, leaf first.
    public var certificate: String
    /// The private key of the leaf certificate.
    public var privateKey: String
    /// With a CA file, every client must present a certificate signed by it (mutual TLS).
    public var clientCA: String?

    public init(certificate: String, privateKey: String, clientCA: String? = nil) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.clientCA = clientCA
    }
}

/// The server's TLS context, replaceable while the server runs: a connection takes the context
/// current when it is accepted and keeps it, so a reload affects new connections only and drops
/// none.
package final class ServerTLS: Sendable {
    let files: TLSFiles
    private let current: Mutex<NIOSSLContext>

    /// Loads `files`. Throws ``ServerError/tls(_:)`` with the file and the reason.
    init(files: TLSFiles) throws {
        self.files = files
        self.current = Mutex(try Self.makeContext(files))
    }

    var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads the files again; on failure the current context stays and the error is thrown.
    func reload() throws {
        let context = try Self.makeContext(files)
        current.withLock { $0 = context }
    }

    /// The TLS 1.2 suites offered: ECDHE key exchange, AES-GCM or ChaCha20-Poly1305.
    static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    private static func makeContext(_ files: TLSFiles) throws -> NIOSSLContext {
        let configuration = try configuration(files)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ServerError.tls(
                "certificate \(files.certificate) and key \(files.privateKey) do not make a TLS context: \(error)")
        }
    }

    /// The TLS configuration of `files` as every port of the server uses it: TLS 1.2 or later,
    /// forward-secret AEAD suites, client certificates when a client CA is given.
    package static func configuration(_ files: TLSFiles) throws -> TLSConfiguration {
        let chain = try load("certificate", files.certificate) { try NIOSSLCertificate.fromPEMFile($0) }
        guard !chain.isEmpty else {
            throw ServerError.tls("certificate file \(files.certificate) holds no certificate")
        }
        let key = try load("private key", files.privateKey) { try NIOSSLPrivateKey(file: $0, format: .pem) }
        var configuration: TLSConfiguration
        if let clientCA = files.clientCA {
            let roots = try load("client CA", clientCA) { try NIOSSLCertificate.fromPEMFile($0) }
            guard !roots.isEmpty else { throw ServerError.tls("client CA file \(clientCA) holds no certificate") }
            configuration = .makeServerConfigurationWithMTLS(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key),
                trustRoots: .certificates(roots))
            configuration.sendCANameList = true
        } else {
            configuration = .makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        }
        configuration.minimumTLSVersion = .tlsv12
        // TLS 1.2 with ephemeral key exchange and AEAD only: the static-RSA suites BoringSSL would
        // also offer have no forward secrecy. TLS 1.3's suites are not affected by this list.
        configuration.cipherSuites = Self.tls12CipherSuites
        return configuration
    }

    private static func load<T>(_ what: String, _ path: String, _ body: (String) throws -> T) throws -> T {
        do {
            return try body(path)
        } catch {
            throw ServerError.tls("cannot load the \(what) from \(path): \(Self.reason(error))")
        }
    }

    /// BoringSSL's errors in a few words.
    private static func reason(_ error: any Error) -> String {
        switch error {
        case let error as IOError: return "\(error.description)"
        case NIOSSLError.failedToLoadCertificate: return "not a PEM certificate"
        case NIOSSLError.failedToLoadPrivateKey: return "not a PEM private key"
        default: return "\(error)"
        }
    }
}

/// Closes a connection whose TLS handshake is not done within `timeout`: a peer that opens TCP
/// and never finishes the handshake would otherwise hold a connection slot until the idle timeout.
final class TLSHandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
