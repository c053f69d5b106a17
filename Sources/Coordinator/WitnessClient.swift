import Control
import Foundation
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Asks a witness (`bcpipe witness run`) what it reaches, over HTTP with a timeout; a witness that
/// does not answer, refuses the token or answers nonsense is a `.noAnswer` with the reason.
public struct WitnessClient: Sendable {
    public var address: HostPort
    /// `BCPIPE_COORDINATOR_TOKEN`, when the witnesses require it.
    public var token: String?
    /// Seconds for the whole request: the witness probes the site with its own shorter timeouts.
    public var timeout: Double

    public init(address: HostPort, token: String?, timeout: Double = 10) {
        self.address = address
        self.token = token
        self.timeout = timeout
    }

    /// `GET /v1/reach/SITE`.
    public func reach(_ site: String) async -> PartitionCheck.WitnessAnswer {
        let path = "/v1/reach/" + (site.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? site)
        switch await get(path, as: SiteReach.self) {
        case .success(let r): return .reach(r)
        case .failure(let e): return .noAnswer(e.description)
        }
    }

    /// `GET /v1/reach`: every site of the witness's topology.
    public func reachAll() async -> Result<[SiteReach], ControlError> {
        await get("/v1/reach", as: [SiteReach].self)
    }

    func get<T: Decodable>(_ path: String, as: T.Type) async -> Result<T, ControlError> {
        var request = URLRequest(url: URL(string: "http://\(address)\(path)")!)
        request.timeoutInterval = timeout
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let data: Data
        let status: Int
        do {
            let (d, response) = try await URLSession.shared.fetch(request)
            data = d
            status = response?.statusCode ?? 0
        } catch {
            return .failure(ControlError(.unreachable, "does not answer (\(error.localizedDescription))"))
        }
        switch status {
        case 200:
            guard let value = try? JSONDecoder().decode(T.self, from: data) else {
                return .failure(ControlError(.inconsistent, "answered something that is not a witness's answer"))
            }
            return .success(value)
        case 401:
            return .failure(
                ControlError(
                    .refused, "refused the token: set the BCPIPE_COORDINATOR_TOKEN the witness was started with"))
        default:
            let said = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["error"] as? String
            return .failure(ControlError(.unreachable, "answered HTTP \(status)\(said.map { ": \($0)" } ?? "")"))
        }
    }
}
