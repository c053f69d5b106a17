import Foundation
import PostgresClient
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Whether a site's PostgreSQL server and coordinator answer from where this process runs: what
/// `dr declare` checks from the operator's host and a witness from its own location. Short
/// timeouts, so a site that is down (or cut off) is told in seconds.
public enum Reachability {
    /// What one look at a site found.
    public struct Probe: Sendable, Equatable {
        /// How the server answered (`it accepted a connection`, `it answered: …`), nil when it did not.
        public var postgres: String?
        public var coordinator: Bool
    }

    /// Both probes of `site` at once.
    public static func probe(_ site: Topology.Site, timeout: Int = 3) async -> Probe {
        async let postgres = postgres(site.postgres, timeout: timeout)
        async let coordinator = http(site.coordinator, timeout: Double(timeout))
        return await Probe(postgres: postgres, coordinator: coordinator)
    }

    /// Whether a PostgreSQL server answers at `conninfo`: a server error (a refused login, an
    /// unknown database, a server starting up) counts as an answer, so no credentials are needed.
    public static func postgres(_ conninfo: String, timeout: Int = 3) async -> String? {
        var config = PostgresConfiguration(conninfo: conninfo, database: "postgres")
        config.connectTimeout = timeout
        config.operationTimeout = Double(timeout) + 2
        config.applicationName = "bcpipe reachability probe"
        do {
            let c = try await PostgresConnection.connect(config)
            await c.close()
            return "it accepted a connection"
        } catch let e as PostgresError where e.sqlState != nil {
            return "it answered: \(e.message)"
        } catch {
            return nil
        }
    }

    /// Whether anything answers HTTP at `address` (`GET /healthz`) within `timeout` seconds.
    public static func http(_ address: HostPort, timeout: Double = 2) async -> Bool {
        var request = URLRequest(url: URL(string: "http://\(address)/healthz")!)
        request.timeoutInterval = timeout
        return (try? await URLSession.shared.fetch(request)) != nil
    }
}

extension URLSession {
    /// `data(for:)` through the completion-handler API: a request is never cancelled half-way
    /// (it ends at its own `timeoutInterval`). swift-corelibs-foundation's async `data(for:)`,
    /// cancelled in flight — a service group shutting down — can trap ("Trying to access a
    /// behaviour for a task that in not in the registry") or hang; seen with the witness's prober.
    func fetch(_ request: URLRequest) async throws -> (Data, HTTPURLResponse?) {
        try await withCheckedThrowingContinuation { continuation in
            dataTask(with: request) { data, response, error in
                if let error {
                    continuation.resume(throwing: error)
                } else {
                    continuation.resume(returning: (data ?? Data(), response as? HTTPURLResponse))
                }
            }.resume()
        }
    }
}
