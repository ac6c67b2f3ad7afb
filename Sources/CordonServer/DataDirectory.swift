import Foundation

/// `--data DIR`: the CA, the server's certificate and their keys. The keys are 0600 and the
/// directory 0700; nothing in it is ever logged.
public struct DataDirectory: Sendable {
    public let path: String
    public init(_ path: String) { self.path = path }

    public var caCertificate: String { path + "/ca.pem" }
    public var caKey: String { path + "/ca-key.pem" }
    public var certificate: String { path + "/server.pem" }
    public var key: String { path + "/server-key.pem" }

    public enum Failure: Error, CustomStringConvertible {
        case exists(String)
        case unreadable(String, String)
        public var description: String {
            switch self {
            case .exists(let file): return "\(file) exists already: this data directory is initialised (move it away to start afresh)"
            case .unreadable(let file, let why): return "cannot read \(file): \(why) (has `cordon-server init --data` run?)"
            }
        }
    }

    /// Writes what `init` issued; refuses to overwrite an existing CA, whose agents would stop trusting the server.
    public func write(_ issued: CertificateAuthority.Issued) throws {
        for file in [caCertificate, caKey, certificate, key] where FileManager.default.fileExists(atPath: file) {
            throw Failure.exists(file)
        }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Self.write(issued.caKeyPEM, to: caKey, mode: 0o600)
        try Self.write(issued.keyPEM, to: key, mode: 0o600)
        try Self.write(issued.caPEM, to: caCertificate, mode: 0o644)
        try Self.write(issued.certificatePEM, to: certificate, mode: 0o644)
    }

    /// Replaces the serving certificate and key; each file is written beside its old self and
    /// renamed over it, so a crash leaves either the old pair or the new one's files in place.
    /// The old pair is kept as `.old` for a rollback.
    public func replaceServing(certificatePEM: String, keyPEM: String) throws {
        for (file, text, mode) in [(key, keyPEM, mode_t(0o600)), (certificate, certificatePEM, mode_t(0o644))] {
            let next = file + ".new"
            unlink(next)
            try Self.write(text, to: next, mode: mode)
            unlink(file + ".old")
            guard link(file, file + ".old") == 0 || errno == ENOENT, rename(next, file) == 0 else {
                throw Failure.unreadable(file, String(cString: strerror(errno)))
            }
        }
    }

    public func read(_ file: String) throws -> String {
        do { return try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw Failure.unreadable(file, (error as NSError).localizedDescription)
        }
    }

    /// Created with its mode, never widened after the fact: the key is never readable by others.
    static func write(_ text: String, to file: String, mode: mode_t) throws {
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure.unreadable(file, String(cString: strerror(errno))) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard Foundation.write(fd, bytes, bytes.count) == bytes.count else { throw Failure.unreadable(file, String(cString: strerror(errno))) }
    }
}
