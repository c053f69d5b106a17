-- Least privilege in a mart. The extractor (bcpipe_extractor) writes the star schema and its
-- own control rows (watermarks, source states, gaps, its progress) and reads the deployment's
-- state; it cannot change the phase, the epoch, the journal or the retired set, which are the
-- coordinators' and operators' procedures' (the owner role: in PostgreSQL 15 creating a
-- subscription needs a superuser). Reporting clients log in as bcpipe_reporting (005).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bcpipe_extractor') THEN
        CREATE ROLE bcpipe_extractor LOGIN;
    END IF;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMP ON DATABASE %I TO bcpipe_extractor', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO bcpipe_reporting', current_database());
END
$$;
GRANT USAGE ON SCHEMA mart, control TO bcpipe_extractor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA mart TO bcpipe_extractor;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA mart TO bcpipe_extractor;
GRANT SELECT ON ALL TABLES IN SCHEMA control TO bcpipe_extractor;
GRANT INSERT, UPDATE, DELETE ON control.watermark, control.source_state, control.data_gaps, control.extractor
    TO bcpipe_extractor;
GRANT USAGE ON SEQUENCE control.data_gaps_id_seq TO bcpipe_extractor;
-- The extractor commits under SELECT … FOR SHARE of the deployment row (a procedure raising the
-- epoch waits for it), which needs UPDATE on some column: the timestamp only.
GRANT UPDATE (updated_at) ON control.deployment TO bcpipe_extractor;
