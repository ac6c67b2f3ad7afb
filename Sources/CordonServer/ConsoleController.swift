import CordonWire
import Crypto
import Foundation
import Hummingbird

/// `/console/`: the web console's files, compiled into the binary. The page is a shell; what it
/// shows comes from the API with the session cookie. Every answer carries a Content-Security-
/// Policy that lets the page run only these files and talk only to this server, so that even a
/// string that got into the page as markup could neither run script nor send anything away.
struct ConsoleController {
    struct Asset: Sendable {
        let body: [UInt8]
        let type: String
        let etag: String
    }

    static let assets: [String: Asset] = {
        let files: [(String, [UInt8], String)] = [
            ("index.html", PackageResources.index_html, "text/html; charset=utf-8"),
            ("console.css", PackageResources.console_css, "text/css; charset=utf-8"),
            ("app.js", PackageResources.app_js, "text/javascript; charset=utf-8"),
            ("api.js", PackageResources.api_js, "text/javascript; charset=utf-8"),
            ("dom.js", PackageResources.dom_js, "text/javascript; charset=utf-8"),
            ("logic.js", PackageResources.logic_js, "text/javascript; charset=utf-8"),
            ("fleet.js", PackageResources.fleet_js, "text/javascript; charset=utf-8"),
            ("host.js", PackageResources.host_js, "text/javascript; charset=utf-8"),
            ("map.js", PackageResources.map_js, "text/javascript; charset=utf-8"),
            ("policy.js", PackageResources.policy_js, "text/javascript; charset=utf-8"),
        ]
        var assets: [String: Asset] = [:]
        for (name, body, type) in files {
            let digest = SHA256.hash(data: body).prefix(12).map { String(format: "%02x", $0) }.joined()
            assets[name] = Asset(body: body, type: type, etag: "\"\(digest)\"")
        }
        return assets
    }()

    /// No inline script or style, no eval, nothing from another origin, no framing, no plugins.
    static let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    func addRoutes(to router: Router<ServerContext>) {
        // The router does not tell `/console` from `/console/`: both are the page (its files are
        // named by absolute paths, so either works).
        router.get("/", use: { _, _ in Self.redirect() })
        router.get("/console", use: { request, _ in Self.serve("index.html", request) })
        router.get("/console/:file", use: { request, context in Self.serve(context.parameters.get("file") ?? "", request) })
    }

    static func redirect() -> Response {
        Response(status: .seeOther, headers: [.location: "/console/"])
    }

    static func serve(_ name: String, _ request: Request) -> Response {
        guard let asset = assets[name] else {
            var response = JSON.response(WireError("no console file \(name)"), status: .notFound)
            secure(&response.headers)
            return response
        }
        var headers: HTTPFields = [.contentType: asset.type, .eTag: asset.etag, .cacheControl: "no-cache"]
        secure(&headers)
        if request.headers[.ifNoneMatch] == asset.etag { return Response(status: .notModified, headers: headers) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: asset.body)))
    }

    static func secure(_ headers: inout HTTPFields) {
        headers[.contentSecurityPolicy] = policy
        headers[.xContentTypeOptions] = "nosniff"
        headers[.init("X-Frame-Options")!] = "DENY"
        headers[.init("Referrer-Policy")!] = "no-referrer"
        headers[.init("Cross-Origin-Opener-Policy")!] = "same-origin"
        headers[.strictTransportSecurity] = "max-age=31536000"
    }
}
