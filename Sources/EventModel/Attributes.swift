/// The `attrs` of an event: string keys to string values, kept sorted by key.
///
/// A small sorted array instead of a dictionary: events carry a handful of keys, and parsing
/// millions of events a second should not pay for hashing each one.
public struct Attributes: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public struct Pair: Sendable, Hashable {
        public var key: String
        public var value: String
    }

    public private(set) var pairs: [Pair] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (k, v) in elements { self[k] = v }
    }

    public init(_ dictionary: [String: String]) {
        pairs = dictionary.map { Pair(key: $0.key, value: $0.value) }.sorted { $0.key < $1.key }
    }

    public var count: Int { pairs.count }
    public var isEmpty: Bool { pairs.isEmpty }

    public subscript(key: String) -> String? {
        get { pairs.first { $0.key == key }?.value }
        set {
            let i = insertionIndex(key)
            if i < pairs.count, pairs[i].key == key {
                if let newValue { pairs[i].value = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.insert(Pair(key: key, value: newValue), at: i)
            }
        }
    }

    /// Adds a pair; false (and no change) when the key is already present.
    mutating func insertNew(_ key: String, _ value: String) -> Bool {
        let i = insertionIndex(key)
        if i < pairs.count, pairs[i].key == key { return false }
        pairs.insert(Pair(key: key, value: value), at: i)
        return true
    }

    private func insertionIndex(_ key: String) -> Int {
        var lo = 0
        var hi = pairs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pairs[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func makeIterator() -> IndexingIterator<[Pair]> { pairs.makeIterator() }

    /// Parses an attrs JSON object (`{"k":"v",…}`), checked as an event's attrs are.
    public init(json: UnsafeRawBufferPointer) throws(LineFailure) {
        var scanner = JSONScanner(json)
        self = try scanner.readAttributesObject()
    }

    /// The attributes as a dictionary.
    public var dictionary: [String: String] {
        Dictionary(uniqueKeysWithValues: pairs.map { ($0.key, $0.value) })
    }
}
