-- The extractor reads a source's rows after its watermark in ingest_id order
-- (`source = $2 AND ingest_id > $1 ORDER BY ingest_id LIMIT n`); the purge deletes by the same
-- pair. On (ingest_id) alone the plan depended on the statistics: right after a queue drained a
-- backlog into the IDB, before autovacuum analyzed it, the planner took the source's rows by the
-- primary key and sorted all of them (500 000 rows, on disk) to return the first 50 000. On
-- (source, ingest_id) every read is one range of one index, whatever the statistics say. It
-- replaces the (ingest_id) index, so a shipper's insert maintains no more indexes than before;
-- ingest_id stays unique by its sequence.
CREATE INDEX IF NOT EXISTS events_source_ingest ON idb.events (source, ingest_id);
DROP INDEX IF EXISTS idb.events_ingest_id;
