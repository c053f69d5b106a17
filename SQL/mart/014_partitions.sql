-- Retention by partition (CONTRACT 5.1): the event layer and the facts are range-partitioned by
-- time, a month per partition, so events and facts older than retention.mart_days leave the mart
-- a whole partition at a time (DROP TABLE: no row-by-row delete, no bloat left behind).
--
--   mart.event             by ts          (primary key source, seq, ts)
--   mart.fact_interaction  by first_at    (the time of the interaction's first event by seq)
--   mart.fact_queue_offer  by offered_at
--   mart.fact_agent_state  by started_at
--
-- Partitions are made ahead of the data (control.ensure_partitions: by this migration, then
-- daily by every extractor, whatever its role, for months ahead), and a default partition takes
-- anything outside them, so an insert never fails for a missing partition. The aggregates, the
-- dimensions, report.data_gaps and the journal are not partitioned and are kept.
-- The publication sends partitioned tables' changes as their root's, so a standby routes them
-- into its own partitions.

-- The report views that read the tables being rebuilt, kept to be made again.
CREATE TEMP TABLE saved_view (name text, definition text);
INSERT INTO saved_view
SELECT 'report.' || viewname, pg_get_viewdef(('report.' || viewname)::regclass)
FROM pg_views WHERE schemaname = 'report' AND viewname IN ('interactions', 'agent_sessions');
DROP VIEW report.interactions, report.agent_sessions;

ALTER TABLE mart.event RENAME TO event_unpartitioned;
ALTER TABLE mart.fact_interaction RENAME TO fact_interaction_unpartitioned;
ALTER TABLE mart.fact_queue_offer RENAME TO fact_queue_offer_unpartitioned;
ALTER TABLE mart.fact_agent_state RENAME TO fact_agent_state_unpartitioned;

CREATE TABLE mart.event (
    source      text        NOT NULL,
    seq         bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    type        text        NOT NULL,
    interaction text,
    media       text,
    direction   text,
    queue       text,
    agent       text,
    reason      text,
    attrs       jsonb,
    extracted_at timestamptz NOT NULL DEFAULT now(),
    transformed boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (ts);

CREATE TABLE mart.fact_interaction (
    source      text NOT NULL,
    interaction text NOT NULL,
    site        text NOT NULL,
    media_key   smallint REFERENCES mart.dim_media,
    direction   text,
    first_queue_key integer REFERENCES mart.dim_queue,
    last_queue_key  integer REFERENCES mart.dim_queue,
    agent_key   integer REFERENCES mart.dim_agent,
    created_date_key integer REFERENCES mart.dim_date,
    created_at  timestamptz,
    answered_at timestamptz,
    ended_at    timestamptz,
    outcome     text NOT NULL CHECK (outcome IN ('answered', 'abandoned', 'unanswered', 'open')),
    wait_ms     bigint,
    talk_ms     bigint NOT NULL DEFAULT 0,
    hold_ms     bigint NOT NULL DEFAULT 0,
    transfers   integer NOT NULL DEFAULT 0,
    first_at    timestamptz NOT NULL
) PARTITION BY RANGE (first_at);

CREATE TABLE mart.fact_queue_offer (
    source      text NOT NULL,
    seq         bigint NOT NULL,
    interaction text NOT NULL,
    queue_key   integer NOT NULL REFERENCES mart.dim_queue,
    media_key   smallint REFERENCES mart.dim_media,
    offered_at  timestamptz NOT NULL,
    hour        timestamptz NOT NULL,
    outcome     text CHECK (outcome IN ('answered', 'abandoned')),
    wait_ms     bigint,
    talk_ms     bigint,
    within_sla  boolean,
    agent_key   integer REFERENCES mart.dim_agent,
    answered_at timestamptz,
    hold_ms     bigint NOT NULL DEFAULT 0
) PARTITION BY RANGE (offered_at);

CREATE TABLE mart.fact_agent_state (
    source      text NOT NULL,
    seq         bigint NOT NULL,
    agent_key   integer NOT NULL REFERENCES mart.dim_agent,
    state       text NOT NULL,
    reason      text,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    day         date NOT NULL
) PARTITION BY RANGE (started_at);

-- The partitioned tables, with their partition key: one place for the functions below.
CREATE TABLE control.partitioned (
    table_name text PRIMARY KEY,
    key_column text NOT NULL,
    fillfactor integer NOT NULL
);
INSERT INTO control.partitioned VALUES
    ('event', 'ts', 100),
    -- Fact rows are updated in place while their interaction is open: room on the page keeps
    -- those updates HOT (mart 012).
    ('fact_interaction', 'first_at', 70), ('fact_queue_offer', 'offered_at', 70),
    ('fact_agent_state', 'started_at', 70);

-- Makes the monthly partitions (UTC months) of every partitioned table from `from_ts` through
-- `through`, and each table's default partition; returns how many it made. A month that the
-- default partition already holds rows of is left to the default (made it would fail). Each
-- partition gets its root's grants: statements go through the root, but a return to normal's
-- copy reads (pg_dump) and empties (TRUNCATE) the partitions themselves.
CREATE FUNCTION control.grant_partition(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON mart.%I TO bcpipe_extractor', name);
    EXECUTE format('GRANT SELECT, INSERT, TRUNCATE ON mart.%I TO bcpipe_coordinator', name);
END
$fn$;
REVOKE ALL ON FUNCTION control.grant_partition(text) FROM PUBLIC;

CREATE FUNCTION control.ensure_partitions(from_ts timestamptz, through timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    t record;
    m timestamptz;
    name text;
    n integer := 0;
BEGIN
    FOR t IN SELECT * FROM control.partitioned ORDER BY table_name LOOP
        IF to_regclass(format('mart.%I', t.table_name || '_default')) IS NULL THEN
            EXECUTE format('CREATE TABLE mart.%I PARTITION OF mart.%I DEFAULT WITH (fillfactor = %s)',
                           t.table_name || '_default', t.table_name, t.fillfactor);
            PERFORM control.grant_partition(t.table_name || '_default');
            n := n + 1;
        END IF;
        m := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        WHILE m <= through LOOP
            name := t.table_name || to_char(m AT TIME ZONE 'UTC', '"_p"YYYY_MM');
            IF to_regclass(format('mart.%I', name)) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE mart.%I PARTITION OF mart.%I FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = %s)',
                        name, t.table_name, m, m + interval '1 month', t.fillfactor);
                    PERFORM control.grant_partition(name);
                    n := n + 1;
                EXCEPTION WHEN check_violation THEN
                    RAISE NOTICE 'the default partition of mart.% holds rows of %: left there', t.table_name, m;
                END;
            END IF;
            m := m + interval '1 month';
        END LOOP;
    END LOOP;
    RETURN n;
END
$fn$;

-- The partitions that hold only rows older than `cutoff`: dropped, unless `dry_run`. Refused
-- under a purge hold and while a return to normal may be copying this mart.
CREATE FUNCTION control.purge_partitions(cutoff timestamptz, dry_run boolean)
RETURNS TABLE (partition_name text, upper_bound timestamptz, row_estimate bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    hold record;
    r record;
BEGIN
    SELECT * INTO hold FROM control.purge_hold WHERE released_at IS NULL ORDER BY set_at LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a purge hold is set: "%" (by %, at %)', hold.reason, hold.set_by, hold.set_at
            USING ERRCODE = '55000', HINT = 'the mart is not purged while a hold is set; it is released by the procedure that set it';
    END IF;
    IF EXISTS (SELECT 1 FROM control.deployment WHERE phase = 'return-to-normal') THEN
        RAISE EXCEPTION 'a return to normal is running (phase return-to-normal)'
            USING ERRCODE = '55000', HINT = 'purge after rtn start has finished';
    END IF;
    FOR r IN
        SELECT c.oid::regclass::text AS part, c.reltuples::bigint AS rows,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
        FROM control.partitioned p
        JOIN pg_inherits i ON i.inhparent = format('mart.%I', p.table_name)::regclass
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        ORDER BY 3, 1
    LOOP
        CONTINUE WHEN r.upper > cutoff;
        partition_name := r.part;
        upper_bound := r.upper;
        row_estimate := r.rows;  -- -1: not estimated yet (never analyzed)
        IF NOT dry_run THEN
            EXECUTE format('DROP TABLE %s', r.part);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

SELECT control.ensure_partitions(
    LEAST(now() - interval '2 months', (SELECT min(ts) FROM mart.event_unpartitioned)), now() + interval '3 months');

INSERT INTO mart.event SELECT source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs,
    extracted_at, transformed FROM mart.event_unpartitioned;
INSERT INTO mart.fact_interaction
SELECT f.*, COALESCE(
    (SELECT e.ts FROM mart.event e WHERE e.source = f.source AND e.interaction = f.interaction ORDER BY e.seq LIMIT 1),
    f.created_at, now())
FROM mart.fact_interaction_unpartitioned f;
INSERT INTO mart.fact_queue_offer SELECT * FROM mart.fact_queue_offer_unpartitioned;
INSERT INTO mart.fact_agent_state SELECT * FROM mart.fact_agent_state_unpartitioned;
DROP TABLE mart.event_unpartitioned, mart.fact_interaction_unpartitioned, mart.fact_queue_offer_unpartitioned,
    mart.fact_agent_state_unpartitioned;

-- The keys and indexes of before, with the partition key in the keys.
ALTER TABLE mart.event ADD PRIMARY KEY (source, seq, ts);
CREATE INDEX event_interaction ON mart.event (source, interaction) WHERE interaction IS NOT NULL;
CREATE INDEX event_agent ON mart.event (agent, ts) WHERE type LIKE 'agent.%';
CREATE INDEX event_pending ON mart.event (ts) WHERE NOT transformed;
ALTER TABLE mart.fact_interaction ADD PRIMARY KEY (source, interaction, first_at);
CREATE INDEX fact_interaction_created ON mart.fact_interaction (created_at);
ALTER TABLE mart.fact_queue_offer ADD PRIMARY KEY (source, seq, offered_at);
CREATE INDEX fact_queue_offer_interaction ON mart.fact_queue_offer (source, interaction);
CREATE INDEX fact_queue_offer_offered_brin ON mart.fact_queue_offer USING brin (offered_at);
CREATE INDEX fact_queue_offer_answered ON mart.fact_queue_offer (agent_key, answered_at)
    WHERE outcome = 'answered';
ALTER TABLE mart.fact_agent_state ADD PRIMARY KEY (source, seq, started_at);
CREATE INDEX fact_agent_state_agent ON mart.fact_agent_state (agent_key, started_at);

DO $$
DECLARE v record;
BEGIN
    FOR v IN SELECT * FROM saved_view ORDER BY name LOOP
        EXECUTE format('CREATE VIEW %s AS %s', v.name, v.definition);
    END LOOP;
END
$$;
DROP TABLE saved_view;

GRANT SELECT ON report.interactions, report.agent_sessions TO bcpipe_reporting, bcpipe_coordinator;
GRANT SELECT, INSERT, UPDATE, DELETE ON mart.event, mart.fact_interaction, mart.fact_queue_offer,
    mart.fact_agent_state TO bcpipe_extractor;
GRANT SELECT, INSERT, TRUNCATE ON mart.event, mart.fact_interaction, mart.fact_queue_offer, mart.fact_agent_state
    TO bcpipe_coordinator;
REVOKE ALL ON control.partitioned FROM bcpipe_coordinator;
GRANT SELECT ON control.partitioned TO bcpipe_coordinator, bcpipe_extractor;
REVOKE ALL ON FUNCTION control.ensure_partitions(timestamptz, timestamptz),
    control.purge_partitions(timestamptz, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION control.ensure_partitions(timestamptz, timestamptz),
    control.purge_partitions(timestamptz, boolean) TO bcpipe_extractor, bcpipe_coordinator;

ALTER PUBLICATION bcpipe_mart ADD TABLE mart.event, mart.fact_interaction, mart.fact_queue_offer,
    mart.fact_agent_state;
ALTER PUBLICATION bcpipe_mart SET (publish_via_partition_root = true);

-- A return to normal's copy rebuilds what it dropped from the recorded definitions; a
-- partitioned table's index is defined ON ONLY its root, which would leave its partitions
-- without: it is built on the root and all its partitions.
CREATE OR REPLACE FUNCTION control.build_copy_indexes() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT * FROM control.copy_index ORDER BY name LOOP
        IF to_regclass(r.name) IS NULL THEN
            EXECUTE replace(r.definition, ' ON ONLY ', ' ON ');
            n := n + 1;
        END IF;
        DELETE FROM control.copy_index WHERE name = r.name;
    END LOOP;
    RETURN n;
END
$fn$;
