import EventModel
import Foundation

/// Realistic contact-center traffic for one source, deterministic for a seed.
///
/// A discrete-event simulation: interactions arrive as a Poisson process and wait in one of
/// several queues for an agent; callers abandon after an exponentially distributed patience;
/// answered interactions talk for a log-normal time, may be held and retrieved, and some are
/// transferred to another queue (a new offer, answered or abandoned there). Agents log in,
/// become ready, go not-ready with a reason now and then, and log out at the end. A heartbeat
/// goes out whenever the source has been silent for `heartbeatEvery` seconds. Events come out
/// in time order with consecutive seqs.
public struct TrafficGenerator: Sequence, IteratorProtocol {
    public struct Profile: Sendable {
        /// Interactions per second arriving at this source.
        public var arrivalsPerSecond: Double = 1
        public var agents: Int = 12
        public var queues: [String] = ["sales", "support", "billing", "retention"]
        /// Weights of voice, chat, email, callback.
        public var mediaWeights: [Double] = [0.7, 0.18, 0.08, 0.04]
        /// Mean caller patience before abandoning, seconds.
        public var meanPatience: Double = 45
        /// Median talk time, seconds (log-normal, sigma 0.6).
        public var medianTalk: Double = 150
        public var holdProbability: Double = 0.2
        public var transferProbability: Double = 0.1
        public var notReadyProbability: Double = 0.1
        public var heartbeatEvery: Double = 5
        public init() {}

        /// A profile staffed for `arrivalsPerSecond`: enough agents for about 85% occupancy, and
        /// shorter talk times where that would take more than `maxAgents`.
        public static func staffed(arrivalsPerSecond: Double, maxAgents: Int = 2000) -> Profile {
            var p = Profile()
            p.arrivalsPerSecond = arrivalsPerSecond
            let handling = p.medianTalk * 1.2 + 60
            let needed = arrivalsPerSecond * handling / 0.85
            if needed > Double(maxAgents) {
                p.agents = maxAgents
                p.medianTalk = Swift.max(5, (Double(maxAgents) * 0.85 / arrivalsPerSecond - 60) / 1.2)
            } else {
                p.agents = Swift.max(4, Int(needed.rounded(.up)))
            }
            return p
        }
    }

    public let source: String
    public let profile: Profile
    private var rng: SplitMix
    private var now: Int64  // ms
    private var seq: Int64
    private var agenda = Agenda()
    private var lastEmitted: Int64
    private var nextCall = 0
    private var idleAgents: [String] = []
    /// Interactions waiting for an agent, longest-waiting first from `waitingHead`: a queue
    /// whose abandoned entries are skipped when reached (no linear search or shifting per event).
    private var waiting: [(call: String, queue: String, media: Media, since: Int64, token: Int)] = []
    private var waitingHead = 0
    /// The tokens of the interactions still waiting (neither answered nor abandoned).
    private var stillWaiting = Set<Int>()
    private var pending: [Event] = []
    private var pendingHead = 0
    private var tokens = 0

    /// - Parameters:
    ///   - start: ms since the epoch of the first event.
    ///   - firstSeq: the seq of the first event (seqs are consecutive).
    public init(source: String, seed: UInt64, start: Int64, firstSeq: Int64 = 1, profile: Profile = Profile()) {
        self.source = source
        self.profile = profile
        var h: UInt64 = 1469598103934665603
        for b in source.utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
        rng = SplitMix(seed: seed ^ h)
        now = start
        seq = firstSeq
        lastEmitted = start
        let spacing = Swift.min(50, 5000 / Swift.max(1, profile.agents))
        for i in 0..<profile.agents {
            let agent = "\(source.replacingOccurrences(of: "/", with: "-"))-agent\(i + 1)"
            agenda.add(start + Int64(i * spacing), .agentLogin(agent))
        }
        agenda.add(start + Int64(rng.exponential(mean: 1 / profile.arrivalsPerSecond) * 1000), .arrival)
        agenda.add(start + Int64(profile.heartbeatEvery * 1000), .heartbeatCheck)
    }

    // MARK: the simulation

    enum Action {
        case arrival
        case agentLogin(String)
        case agentReady(String)
        case abandon(call: String, queue: String, token: Int)
        case hold(call: String, agent: String)
        case retrieve(call: String, agent: String)
        case connect(call: String, agent: String, queue: String, media: Media)
        case finish(call: String, agent: String, queue: String, media: Media, transfer: Bool)
        case heartbeatCheck
    }

    public mutating func next() -> Event? {
        while pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
            guard let (time, action) = agenda.pop() else { return nil }
            now = Swift.max(now, time)
            step(action)
        }
        defer { pendingHead += 1 }
        return pending[pendingHead]
    }

    private mutating func emit(
        _ type: EventType, interaction: String? = nil, media: Media? = nil, queue: String? = nil,
        agent: String? = nil, reason: String? = nil, attrs: Attributes = Attributes()
    ) {
        pending.append(
            Event(
                source: source, seq: seq, ts: Timestamp(millisecondsSinceEpoch: now), type: type,
                interaction: interaction,
                media: media, direction: type == .interactionCreated ? .inbound : nil, queue: queue, agent: agent,
                reason: reason, attrs: attrs))
        seq += 1
        lastEmitted = now
    }

    private mutating func later(_ seconds: Double, _ action: Action) {
        agenda.add(now + Swift.max(1, Int64(seconds * 1000)), action)
    }

    private mutating func step(_ action: Action) {
        switch action {
        case .arrival:
            nextCall += 1
            let call =
                "\(source.split(separator: "/").last ?? "x")-\(String(nextCall, radix: 36))-\(rng.next() % 100_000)"
            let media = Media.allCases[rng.weighted(profile.mediaWeights)]
            let queue = profile.queues[Int(rng.next() % UInt64(profile.queues.count))]
            let attrs: Attributes = [
                "segment": ["gold", "silver", "bronze"][Int(rng.next() % 3)],
                "language": ["en", "fr", "de", "es"][Int(rng.next() % 4)],
            ]
            emit(.interactionCreated, interaction: call, media: media, attrs: attrs)
            agenda.add(now + Int64(rng.exponential(mean: 1 / profile.arrivalsPerSecond) * 1000) + 1, .arrival)
            offer(call: call, queue: queue, media: media)
        case .agentLogin(let agent):
            emit(.agentLogin, agent: agent)
            emit(.agentReady, agent: agent)
            becomeIdle(agent)
        case .agentReady(let agent):
            emit(.agentReady, agent: agent)
            becomeIdle(agent)
        case .abandon(let call, let queue, let token):
            guard stillWaiting.remove(token) != nil else { return }
            emit(.interactionAbandoned, interaction: call, queue: queue)
            emit(.interactionEnded, interaction: call)
        case .hold(let call, let agent):
            emit(.interactionHeld, interaction: call, agent: agent)
            later(rng.uniform(10, 60), .retrieve(call: call, agent: agent))
        case .retrieve(let call, let agent):
            emit(.interactionRetrieved, interaction: call, agent: agent)
        case .finish(let call, let agent, let queue, let media, let transfer):
            if transfer {
                emit(.interactionTransferred, interaction: call, agent: agent)
                let other = profile.queues.filter { $0 != queue }
                offer(call: call, queue: other[Int(rng.next() % UInt64(other.count))], media: media)
            } else {
                emit(.interactionEnded, interaction: call, agent: agent)
            }
            if rng.uniform(0, 1) < profile.notReadyProbability {
                emit(
                    .agentNotReady, agent: agent, reason: ["break", "training", "after-call work"][Int(rng.next() % 3)])
                later(rng.uniform(20, 120), .agentReady(agent))
            } else {
                becomeIdle(agent)
            }
        case .connect(let call, let agent, let queue, let media):
            emit(.interactionAnswered, interaction: call, agent: agent)
            let talk = profile.medianTalk * exp(0.6 * rng.normal())
            if rng.uniform(0, 1) < profile.holdProbability {
                later(talk * rng.uniform(0.2, 0.6), .hold(call: call, agent: agent))
            }
            let transfer = rng.uniform(0, 1) < profile.transferProbability
            later(talk + 60, .finish(call: call, agent: agent, queue: queue, media: media, transfer: transfer))
        case .heartbeatCheck:
            if now - lastEmitted >= Int64(profile.heartbeatEvery * 1000) { emit(.heartbeat) }
            later(profile.heartbeatEvery, .heartbeatCheck)
        }
    }

    private mutating func offer(call: String, queue: String, media: Media) {
        emit(.interactionQueued, interaction: call, queue: queue)
        tokens += 1
        waiting.append((call, queue, media, now, tokens))
        stillWaiting.insert(tokens)
        later(rng.exponential(mean: profile.meanPatience), .abandon(call: call, queue: queue, token: tokens))
        dispatch()
    }

    private mutating func becomeIdle(_ agent: String) {
        idleAgents.append(agent)
        dispatch()
    }

    /// Connects waiting interactions to idle agents, longest-waiting first.
    private mutating func dispatch() {
        while waitingHead < waiting.count && !idleAgents.isEmpty {
            let w = waiting[waitingHead]
            waitingHead += 1
            if waitingHead > 1024 && waitingHead * 2 > waiting.count {
                waiting.removeFirst(waitingHead)
                waitingHead = 0
            }
            guard stillWaiting.remove(w.token) != nil else { continue }  // abandoned meanwhile
            let agent = idleAgents.remove(at: Int(rng.next() % UInt64(idleAgents.count)))
            // The agent's phone rings a moment before the answer.
            later(rng.uniform(0.5, 3), .connect(call: w.call, agent: agent, queue: w.queue, media: w.media))
        }
    }
}

/// Future actions in time order (ties in insertion order).
struct Agenda {
    private var heap: [(time: Int64, order: Int, action: TrafficGenerator.Action)] = []
    private var counter = 0

    mutating func add(_ time: Int64, _ action: TrafficGenerator.Action) {
        counter += 1
        heap.append((time, counter, action))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        (heap[a].time, heap[a].order) < (heap[b].time, heap[b].order)
    }

    mutating func pop() -> (Int64, TrafficGenerator.Action)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < heap.count && less(l, m) { m = l }
            if r < heap.count && less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.action)
    }
}

/// A small deterministic random number generator (SplitMix64) with the distributions the
/// simulation needs; also what seeded tests and benchmarks draw from.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
    mutating func exponential(mean: Double) -> Double { -mean * log(1 - uniform(0, 1) + 1e-12) }
    mutating func normal() -> Double {
        sqrt(-2 * log(uniform(1e-12, 1))) * cos(2 * Double.pi * uniform(0, 1))
    }
    mutating func weighted(_ weights: [Double]) -> Int {
        var x = uniform(0, weights.reduce(0, +))
        for (i, w) in weights.enumerated() {
            x -= w
            if x < 0 { return i }
        }
        return weights.count - 1
    }
}
