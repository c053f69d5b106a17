-- Closes two doors the SECURITY DEFINER functions of 007 left open (issue 15).
--
-- 1. control.subscribe took any conninfo: a coordinator could point an owner-owned subscription
--    at a server of its choosing and have its rows applied as the owner. Now it takes a site name
--    and subscribes only to the publishers the deployment knows: control.publisher, written by
--    the owner alone (`bcpipe db migrate`, from the topology file of this site — each site's
--    server as this site reaches it).
-- 2. control.drop_copy_indexes() could be called at any time and dropped mart.event's primary
--    key. Now only while this mart is being rebuilt by a return to normal: its phase is
--    return-to-normal and the calling session holds the procedure lock.
CREATE TABLE control.publisher (
    site       text PRIMARY KEY,
    conninfo   text NOT NULL,     -- libpq conninfo of the site's server, without dbname and user
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON control.publisher FROM PUBLIC;
GRANT SELECT ON control.publisher TO bcpipe_coordinator;

DROP FUNCTION control.subscribe(text, text, text, boolean);

-- Subscribes this mart to the publication bcpipe_mart of site `publisher_site`'s mart, from the
-- existing slot `slot` (the caller creates it on the publisher: a REPLICATION role may). The
-- server is the one control.publisher names; the subscription connects as the role that asked.
CREATE FUNCTION control.subscribe(name text, publisher_site text, slot text, copy_data boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    server text;
BEGIN
    IF name !~ '^bcpipe_[a-z0-9_]{1,50}$' OR slot !~ '^bcpipe_[a-z0-9_]{1,50}$' THEN
        RAISE EXCEPTION 'subscription and slot names are bcpipe_ and lower-case letters, digits or _ (got % and %)',
            name, slot USING ERRCODE = '22023';
    END IF;
    SELECT p.conninfo INTO server FROM control.publisher p WHERE p.site = publisher_site;
    IF server IS NULL THEN
        RAISE EXCEPTION 'site % is not a publisher this mart knows (known: %)', publisher_site,
            coalesce((SELECT string_agg(site, ', ' ORDER BY site) FROM control.publisher), 'none')
            USING ERRCODE = '22023',
                  HINT = 'run bcpipe db migrate at this site with a topology file that names the site';
    END IF;
    EXECUTE format(
        'CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION bcpipe_mart WITH (create_slot = false, slot_name = %L, copy_data = %s, binary = true, streaming = on)',
        name, server || ' dbname=mart connect_timeout=5 user=''' || replace(replace(session_user, '\', '\\'), '''', '\''') || '''',
        slot, CASE WHEN copy_data THEN 'true' ELSE 'false' END);
END
$fn$;

-- Guard the bulk copy's index drop.
ALTER FUNCTION control.drop_copy_indexes() RENAME TO drop_copy_indexes_unchecked;
REVOKE ALL ON FUNCTION control.drop_copy_indexes_unchecked() FROM PUBLIC, bcpipe_coordinator;

CREATE FUNCTION control.drop_copy_indexes() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM control.deployment WHERE phase = 'return-to-normal') THEN
        RAISE EXCEPTION 'this mart is not being rebuilt by a return to normal (phase %)',
            (SELECT phase FROM control.deployment) USING ERRCODE = '55000',
            HINT = 'the mart''s indexes and keys are dropped only by rtn start''s copy';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint) = hashtext('bcpipe procedure')::bigint
    ) THEN
        RAISE EXCEPTION 'the session does not hold the procedure lock of this mart' USING ERRCODE = '55000',
            HINT = 'only rtn start''s copy, holding pg_advisory_lock(hashtext(''bcpipe procedure'')), drops the indexes';
    END IF;
    RETURN control.drop_copy_indexes_unchecked();
END
$fn$;

REVOKE ALL ON FUNCTION control.subscribe(text, text, text, boolean), control.drop_copy_indexes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION control.subscribe(text, text, text, boolean), control.drop_copy_indexes()
    TO bcpipe_coordinator;
