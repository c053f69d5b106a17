-- The coordinator role, bcpipe_coordinator: what the coordinators and the operators' procedures
-- (dr declare, rtn start, switchover, idb purge, status) log in as. It writes the deployment's
-- state (phase, epoch, role, journal, procedures, retired set, holds), truncates and reloads the
-- mart when a site is rebuilt, and creates and drops replication slots (REPLICATION). It is not a
-- superuser and owns nothing: what PostgreSQL 15 reserves to a superuser or to the tables' owner
-- (subscriptions, the reporting role's setting, dropping and building the mart's indexes around
-- a bulk copy) it does through the SECURITY DEFINER functions below, each of which does one
-- thing with checked arguments. The publication is made here, once, by the owner.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bcpipe_coordinator') THEN
        CREATE ROLE bcpipe_coordinator LOGIN REPLICATION;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMP ON DATABASE %I TO bcpipe_coordinator', current_database());
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'bcpipe_mart') THEN
        CREATE PUBLICATION bcpipe_mart FOR TABLE
            mart.event, mart.dim_date, mart.dim_queue, mart.dim_agent, mart.fact_interaction,
            mart.fact_queue_offer, mart.fact_agent_state, mart.agg_queue_hourly, mart.agg_agent_daily,
            control.watermark, control.source_state, control.data_gaps, control.extractor, control.purge_hold;
    END IF;
END
$$;
-- Replication lag (pg_stat_replication's lag columns) for status.
GRANT pg_monitor TO bcpipe_coordinator;
GRANT USAGE ON SCHEMA mart, control, report TO bcpipe_coordinator;
-- The mart: read (status, the source of a copy), and emptied and reloaded (a copy's target, a
-- promoted standby that never finished its first copy); never updated or deleted row by row.
GRANT SELECT, INSERT, TRUNCATE ON ALL TABLES IN SCHEMA mart TO bcpipe_coordinator;
GRANT SELECT ON ALL TABLES IN SCHEMA report TO bcpipe_coordinator;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA control TO bcpipe_coordinator;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA mart, control TO bcpipe_coordinator;
-- The journal is appended to, never rewritten.
REVOKE UPDATE, DELETE, TRUNCATE ON control.journal FROM bcpipe_coordinator;

-- The indexes and keys a copy dropped, kept until it builds them again (so an interrupted copy
-- rebuilds them when it is run again). The owner's alone: its statements run as the owner.
CREATE TABLE control.copy_index (
    name       text PRIMARY KEY,   -- the index
    constraint_name text,          -- the key it backs, if any
    table_name text NOT NULL,
    definition text NOT NULL       -- CREATE INDEX … or ALTER TABLE … ADD CONSTRAINT …
);
REVOKE ALL ON control.copy_index FROM bcpipe_coordinator;

-- Subscribes this mart to the publication bcpipe_mart at `conninfo`, from the existing slot
-- `slot` (the caller creates it on the publisher: a REPLICATION role may). The subscription
-- connects as the role that asked for it.
CREATE FUNCTION control.subscribe(name text, conninfo text, slot text, copy_data boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF name !~ '^bcpipe_[a-z0-9_]{1,50}$' OR slot !~ '^bcpipe_[a-z0-9_]{1,50}$' THEN
        RAISE EXCEPTION 'subscription and slot names are bcpipe_ and lower-case letters, digits or _ (got % and %)',
            name, slot USING ERRCODE = '22023';
    END IF;
    EXECUTE format(
        'CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION bcpipe_mart WITH (create_slot = false, slot_name = %L, copy_data = %s, binary = true, streaming = on)',
        name, conninfo || ' user=''' || replace(replace(session_user, '\', '\\'), '''', '\''') || '''', slot,
        CASE WHEN copy_data THEN 'true' ELSE 'false' END);
END
$fn$;

-- Drops a subscription of this mart, leaving its slot on the publisher (the caller drops it
-- there, or the publisher is gone).
CREATE FUNCTION control.unsubscribe(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
                   WHERE s.subname = name AND d.datname = current_database()) THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', name);
    EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', name);
    EXECUTE format('DROP SUBSCRIPTION %I', name);
    RETURN true;
END
$fn$;

-- Makes bcpipe_reporting read-only in this mart, or lifts that (the reporting mart).
CREATE FUNCTION control.set_reporting_read_only(read_only boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF read_only THEN
        EXECUTE format('ALTER ROLE bcpipe_reporting IN DATABASE %I SET default_transaction_read_only = on',
                       current_database());
    ELSE
        EXECUTE format('ALTER ROLE bcpipe_reporting IN DATABASE %I RESET default_transaction_read_only',
                       current_database());
    END IF;
END
$fn$;

-- Before a bulk copy into the published tables: records and drops their indexes and keys
-- (except those of tables another table's foreign key references). Returns how many it dropped.
CREATE FUNCTION control.drop_copy_indexes() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT i.indexrelid::regclass::text AS name, t.oid::regclass::text AS table_name, con.conname,
               CASE WHEN con.oid IS NULL THEN pg_get_indexdef(i.indexrelid)
                    ELSE format('ALTER TABLE %s ADD CONSTRAINT %I %s', t.oid::regclass, con.conname,
                                pg_get_constraintdef(con.oid)) END AS definition
        FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_publication_rel pr ON pr.prrelid = t.oid
        JOIN pg_publication p ON p.oid = pr.prpubid AND p.pubname = 'bcpipe_mart'
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid AND con.contype IN ('p', 'u')
        WHERE NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = t.oid AND f.contype = 'f')
        ORDER BY 1
    LOOP
        INSERT INTO control.copy_index (name, constraint_name, table_name, definition)
        VALUES (r.name, r.conname, r.table_name, r.definition) ON CONFLICT (name) DO NOTHING;
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', r.table_name, r.conname);
        ELSE
            EXECUTE format('DROP INDEX IF EXISTS %s', r.name);
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;

-- After the copy: builds what drop_copy_indexes dropped. Returns how many it built.
CREATE FUNCTION control.build_copy_indexes() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT * FROM control.copy_index ORDER BY name LOOP
        IF to_regclass(r.name) IS NULL THEN
            EXECUTE r.definition;
            n := n + 1;
        END IF;
        DELETE FROM control.copy_index WHERE name = r.name;
    END LOOP;
    RETURN n;
END
$fn$;

REVOKE ALL ON FUNCTION control.subscribe(text, text, text, boolean), control.unsubscribe(text),
    control.set_reporting_read_only(boolean), control.drop_copy_indexes(), control.build_copy_indexes()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION control.subscribe(text, text, text, boolean), control.unsubscribe(text),
    control.set_reporting_read_only(boolean), control.drop_copy_indexes(), control.build_copy_indexes()
    TO bcpipe_coordinator;
