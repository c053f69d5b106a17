-- Least privilege in an IDB. Each IDB has a collector role of its own,
-- bcpipe_collector_<database> (the lab: bcpipe_collector_idb_site1_a), that may connect to this
-- database only and append events here; it can neither change nor delete what is stored, nor
-- reach another IDB or a mart. The extractor (bcpipe_extractor) reads; disaster recovery's
-- fencing marks and IDB purges are the owner's (operators' procedures). Passwords are set by the
-- operator (ALTER ROLE … PASSWORD, or certificates), never by a migration.
DO $$
DECLARE
    collector text := 'bcpipe_collector_' || current_database();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = collector) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', collector);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bcpipe_extractor') THEN
        CREATE ROLE bcpipe_extractor LOGIN;
    END IF;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    -- TEMP: the collector stages each batch in a temporary table before it inserts.
    EXECUTE format('GRANT CONNECT, TEMP ON DATABASE %I TO %I', current_database(), collector);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO bcpipe_extractor', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA idb TO %I, bcpipe_extractor', collector);
    EXECUTE format('GRANT SELECT, INSERT ON idb.events TO %I', collector);
    EXECUTE format('GRANT USAGE ON SEQUENCE idb.ingest_seq TO %I', collector);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON idb.source_checkpoint, idb.ship_position TO %I', collector);
    GRANT SELECT ON idb.events, idb.source_checkpoint, idb.fence TO bcpipe_extractor;
END
$$;
