import Foundation

/// Certificates for TLS tests, made by the `openssl` CLI in a directory: a CA, a server
/// certificate it signs for 127.0.0.1 and localhost, a client certificate it signs, and a second
/// CA with a client certificate of its own (one the server must refuse).
public struct TestCertificates: Sendable {
    public let directory: String
    public var caCertificate: String { directory + "/ca.pem" }
    public var serverCertificate: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCertificate: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }
    public var strangerCertificate: String { directory + "/stranger.pem" }
    public var strangerKey: String { directory + "/stranger.key" }

    /// Makes every file in `directory`.
    public static func make(in directory: String) throws -> TestCertificates {
        let certificates = TestCertificates(directory: directory)
        try certificates.makeCA("ca", subject: "apikeyd test CA")
        try certificates.makeCA("other-ca", subject: "another CA")
        try certificates.issue("server", by: "ca", subject: "apikeyd test server", serverNames: true)
        try certificates.issue("client", by: "ca", subject: "a client", serverNames: false)
        try certificates.issue("stranger", by: "other-ca", subject: "a stranger", serverNames: false)
        return certificates
    }

    /// Replaces the server certificate with a new one (same CA, new subject), as a renewal would.
    public func renewServerCertificate(subject: String) throws {
        try issue("server", by: "ca", subject: subject, serverNames: true)
    }

    private func makeCA(_ name: String, subject: String) throws {
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=\(subject)", "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).pem",
        ])
    }

    private func issue(_ name: String, by ca: String, subject: String, serverNames: Bool) throws {
        let key = "\(directory)/\(name).key"
        let request = "\(directory)/\(name).csr"
        let extensions = "\(directory)/\(name).ext"
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(subject)",
            "-keyout", key, "-out", request,
        ])
        let usage = serverNames ? "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n"
        try usage.write(toFile: extensions, atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", request, "-CA", "\(directory)/\(ca).pem", "-CAkey", "\(directory)/\(ca).key",
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", "\(directory)/\(name).pem",
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let result = try runCommand(URL(fileURLWithPath: "/usr/bin/openssl"), arguments)
        guard result.status == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments[0]): \(result.stderr)"])
        }
    }
}
