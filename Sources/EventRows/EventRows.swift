import EventModel
import PostgresClient

/// Events as rows of PostgreSQL COPY text format, in the column order both `idb.events` and
/// `mart.event` start with. Used by the collector's shipper and the extractor.
public enum EventRows {
    /// The columns, in COPY order.
    public static let columns = "source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs"

    /// Encodes `e` into `row` (reset first). `attrs` is the attrs column's JSON when it is already
    /// at hand (the extractor passes the IDB's text through); otherwise it is encoded from the event.
    /// `transformed`, when given, is one more column (the mart's).
    public static func encode(_ e: Event, attrs: String?? = nil, transformed: Bool? = nil, into row: inout CopyRow) {
        row.reset()
        row.append(e.source)
        row.append(e.seq)
        row.append(e.ts.rfc3339)
        row.append(e.type.rawValue)
        row.append(e.interaction)
        row.append(e.media?.rawValue)
        row.append(e.direction?.rawValue)
        row.append(e.queue)
        row.append(e.agent)
        row.append(e.reason)
        row.append(attrs ?? (e.attrs.isEmpty ? nil : e.attrs.json))
        if let transformed { row.append(transformed ? "t" : "f") }
        row.end()
    }
}
