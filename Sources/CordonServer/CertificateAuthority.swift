import Crypto
import Foundation
import SwiftASN1
import X509

/// The server's private CA and its serving certificate, made by `cordon-server init`.
///
/// Agents and analysts are given `ca.pem` only; trusting that one file (and not the system's
/// roots) means nobody else's certificate can stand in for the server.
public enum CertificateAuthority {
    public struct Issued: Sendable {
        public var caPEM: String
        public var caKeyPEM: String
        public var certificatePEM: String
        public var keyPEM: String
    }

    /// A new CA (ten years) and a server certificate (two years) for `names`: DNS names and IP
    /// addresses, as given to `--name`.
    public static func create(names: [String], now: Date = Date()) throws -> Issued {
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("Cordon")
            CommonName("Cordon fleet CA")
        }
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 10 * 365 * 86400,
            issuer: caName, subject: caName,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(caKey.publicKey))
            },
            issuerPrivateKey: .init(caKey))
        let (certificatePEM, keyPEM) = try serving(names: names, caName: caName, caKey: caKey, now: now)
        return Issued(caPEM: try ca.serializeAsPEM().pemString, caKeyPEM: caKey.pemRepresentation,
                      certificatePEM: certificatePEM, keyPEM: keyPEM)
    }

    /// A new serving certificate and key (two years) from the existing CA: agents keep trusting
    /// the same `ca.pem`, so rotating it needs nothing on the hosts.
    public static func renew(caPEM: String, caKeyPEM: String, names: [String], now: Date = Date()) throws -> (certificatePEM: String, keyPEM: String) {
        let ca = try Certificate(pemEncoded: caPEM)
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: caKeyPEM)
        guard ca.publicKey == Certificate.PublicKey(caKey.publicKey) else { throw RenewalFailure("ca-key.pem is not the key of ca.pem") }
        return try serving(names: names, caName: ca.subject, caKey: caKey, now: now)
    }

    public struct RenewalFailure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    private static func serving(names: [String], caName: DistinguishedName, caKey: P256.Signing.PrivateKey,
                                now: Date) throws -> (certificatePEM: String, keyPEM: String) {
        let serverKey = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("Cordon")
            CommonName(names.first ?? "cordon-server")
        }
        let server = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(serverKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 2 * 365 * 86400,
            issuer: caName, subject: subject,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names.map(generalName))
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: .init(caKey.publicKey)).keyIdentifier)
            },
            issuerPrivateKey: .init(caKey))
        return (try server.serializeAsPEM().pemString, serverKey.pemRepresentation)
    }

    /// An IP address as the certificate's IP SAN (so `https://192.0.2.10:8443` verifies), else a DNS name.
    static func generalName(_ name: String) -> GeneralName {
        var v4 = in_addr()
        if inet_pton(AF_INET, name, &v4) == 1 {
            return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: v4) { ArraySlice($0) }))
        }
        var v6 = in6_addr()
        let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
        if inet_pton(AF_INET6, bare, &v6) == 1 {
            return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: v6) { ArraySlice($0) }))
        }
        return .dnsName(name)
    }
}
