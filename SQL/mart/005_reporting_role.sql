-- The reporting role: what reporting clients log in as. It sees the `report` schema and nothing
-- else (the views read the mart as their owner). A site's coordinator keeps it read-only in every
-- mart but the reporting one (`ALTER ROLE … IN DATABASE mart SET default_transaction_read_only`),
-- so a client that lists both sites' servers with `target_session_attrs=read-write` lands on the
-- reporting mart, before and after a switch-over or disaster recovery.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bcpipe_reporting') THEN
        CREATE ROLE bcpipe_reporting LOGIN;
    END IF;
END
$$;
REVOKE ALL ON SCHEMA mart, control FROM PUBLIC;
GRANT USAGE ON SCHEMA report TO bcpipe_reporting;
GRANT SELECT ON ALL TABLES IN SCHEMA report TO bcpipe_reporting;
ALTER DEFAULT PRIVILEGES IN SCHEMA report GRANT SELECT ON TABLES TO bcpipe_reporting;
-- Until its coordinator says this is the reporting mart.
DO $$
BEGIN
    EXECUTE format('ALTER ROLE bcpipe_reporting IN DATABASE %I SET default_transaction_read_only = on',
                   current_database());
END
$$;
