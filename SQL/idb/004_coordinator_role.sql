-- The coordinator role (SQL/mart/007_coordinator_role.sql) in an IDB: disaster recovery writes
-- its fence here and return to normal releases it; `bcpipe idb purge` deletes what every active
-- mart has extracted. It reads the rest and changes nothing else a collector stored.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bcpipe_coordinator') THEN
        CREATE ROLE bcpipe_coordinator LOGIN REPLICATION;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO bcpipe_coordinator', current_database());
END
$$;
GRANT USAGE ON SCHEMA idb TO bcpipe_coordinator;
GRANT SELECT ON ALL TABLES IN SCHEMA idb TO bcpipe_coordinator;
GRANT INSERT, UPDATE ON idb.fence TO bcpipe_coordinator;
GRANT DELETE ON idb.events TO bcpipe_coordinator;
