import Foundation

/// The bearer tokens of the HTTP APIs (`BCPIPE_INGEST_TOKEN` for collectors,
/// `BCPIPE_COORDINATOR_TOKEN` for coordinators): compared in constant time, never logged.
public enum AccessToken {
    /// Whether an `Authorization` header carries `token`: `Bearer TOKEN`, or HTTP Basic with
    /// TOKEN as the password (what a browser sends for the status page; the user name is free).
    public static func authorizes(_ authorization: String?, token: String) -> Bool {
        guard let auth = authorization?.trimmingCharacters(in: .whitespaces) else { return false }
        let lower = auth.lowercased()
        if lower.hasPrefix("bearer ") {
            return constantTimeEquals(String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces), token)
        }
        if lower.hasPrefix("basic "),
            let data = Data(base64Encoded: String(auth.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
            let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
        {
            return constantTimeEquals(String(pair[pair.index(after: colon)...]), token)
        }
        return false
    }

    /// Compares in time independent of where the strings differ.
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }

    /// The token from the environment variable `name`, or nil when unset or empty.
    public static func fromEnvironment(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }
}
