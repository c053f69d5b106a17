import EventModel
import PostgresClient

/// The columns of `idb.events` a shipper copies, in COPY order.
let idbCopyColumns = "source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs"

/// Encodes an event as one COPY text row of `idbCopyColumns`.
func encode(_ e: Event, into row: inout CopyRow) {
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
    row.append(e.attrs.isEmpty ? nil : e.attrs.json)
    row.end()
}
