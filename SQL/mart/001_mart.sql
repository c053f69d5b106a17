-- The mart: an atomic event layer, a star schema in the spirit of Genesys Info Mart, the
-- control schema (watermarks, deployment epoch and phase, journal, gaps, purge holds) and
-- the report views of CONTRACT 5, which are the stable interface for reporting teams.

CREATE SCHEMA IF NOT EXISTS mart;
CREATE SCHEMA IF NOT EXISTS control;
CREATE SCHEMA IF NOT EXISTS report;

-- Every extracted event exactly once: the primary key is the mart's duplicate guard.
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
    PRIMARY KEY (source, seq)
);
CREATE INDEX event_interaction ON mart.event (source, interaction) WHERE interaction IS NOT NULL;
CREATE INDEX event_agent ON mart.event (agent, ts) WHERE type LIKE 'agent.%';

-- Dimensions.
CREATE TABLE mart.dim_date (
    date_key    integer PRIMARY KEY,          -- yyyymmdd
    day         date    NOT NULL UNIQUE,
    year        smallint NOT NULL,
    month       smallint NOT NULL,
    day_of_month smallint NOT NULL,
    day_of_week smallint NOT NULL             -- ISO: 1 Monday … 7 Sunday
);
CREATE TABLE mart.dim_media (
    media_key   smallint PRIMARY KEY,
    media       text NOT NULL UNIQUE
);
INSERT INTO mart.dim_media VALUES (1, 'voice'), (2, 'chat'), (3, 'email'), (4, 'callback');
CREATE TABLE mart.dim_queue (
    queue_key   serial PRIMARY KEY,
    queue       text NOT NULL UNIQUE
);
CREATE TABLE mart.dim_agent (
    agent_key   serial PRIMARY KEY,
    agent       text NOT NULL UNIQUE
);

-- Accumulating snapshot: one row per interaction, updated as its later events arrive.
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
    PRIMARY KEY (source, interaction)
);
CREATE INDEX fact_interaction_created ON mart.fact_interaction (created_at);

-- One row per offer to a queue (each interaction.queued event).
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
    PRIMARY KEY (source, seq)
);
CREATE INDEX fact_queue_offer_hour ON mart.fact_queue_offer (hour, queue_key);
CREATE INDEX fact_queue_offer_interaction ON mart.fact_queue_offer (source, interaction);

-- Agent state intervals: from one agent.* event to that agent's next.
CREATE TABLE mart.fact_agent_state (
    source      text NOT NULL,
    seq         bigint NOT NULL,
    agent_key   integer NOT NULL REFERENCES mart.dim_agent,
    state       text NOT NULL,
    reason      text,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    day         date NOT NULL,
    PRIMARY KEY (source, seq)
);
CREATE INDEX fact_agent_state_day ON mart.fact_agent_state (day, agent_key);

-- Aggregates, recomputed only for the buckets a batch touched.
CREATE TABLE mart.agg_queue_hourly (
    hour        timestamptz NOT NULL,
    queue_key   integer NOT NULL REFERENCES mart.dim_queue,
    media_key   smallint NOT NULL REFERENCES mart.dim_media,
    offered     bigint NOT NULL,
    answered    bigint NOT NULL,
    abandoned   bigint NOT NULL,
    answered_within_sla bigint NOT NULL,
    wait_ms_sum bigint NOT NULL,
    wait_count  bigint NOT NULL,
    talk_ms_sum bigint NOT NULL,
    talk_count  bigint NOT NULL,
    PRIMARY KEY (hour, queue_key, media_key)
);
CREATE TABLE mart.agg_agent_daily (
    day         date NOT NULL,
    agent_key   integer NOT NULL REFERENCES mart.dim_agent,
    answered    bigint NOT NULL,
    talk_ms     bigint NOT NULL,
    hold_ms     bigint NOT NULL,
    ready_ms    bigint NOT NULL,
    not_ready_ms bigint NOT NULL,
    PRIMARY KEY (day, agent_key)
);

-- Control: the deployment's phase and epoch (fencing), per-(IDB, source) watermarks,
-- per-source completeness, gaps, purge holds and the procedure journal.
CREATE TABLE control.deployment (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch       bigint  NOT NULL DEFAULT 1,
    phase       text    NOT NULL DEFAULT 'normal'
                CHECK (phase IN ('normal', 'disaster-recovery', 'emergency', 'return-to-normal')),
    mode        text,
    reporting_site text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO control.deployment DEFAULT VALUES;

CREATE TABLE control.watermark (
    idb_site    text   NOT NULL,
    idb_database text  NOT NULL,
    source      text   NOT NULL,
    last_ingest_id bigint NOT NULL DEFAULT 0,
    max_seq     bigint,
    available_through timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idb_site, idb_database, source)
);

CREATE TABLE control.source_state (
    source      text PRIMARY KEY,
    site        text NOT NULL,
    state       text NOT NULL DEFAULT 'current' CHECK (state IN ('current', 'delayed', 'stuck', 'retired')),
    complete_through timestamptz,
    last_advanced_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE control.data_gaps (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,
    gap_from    timestamptz NOT NULL,
    gap_to      timestamptz,
    reason      text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    backfilled_at timestamptz
);

CREATE TABLE control.purge_hold (
    id          bigserial PRIMARY KEY,
    reason      text NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);

CREATE TABLE control.journal (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    epoch       bigint NOT NULL,
    actor       text NOT NULL,
    procedure   text NOT NULL,
    step        text NOT NULL,
    status      text NOT NULL,
    detail      jsonb
);

-- The reporting interface (CONTRACT 5).
CREATE VIEW report.interactions AS
SELECT f.source, f.site, f.interaction, m.media, f.direction,
       fq.queue AS first_queue, lq.queue AS last_queue, a.agent,
       f.created_at, f.answered_at, f.ended_at, f.outcome,
       f.wait_ms, f.talk_ms, f.hold_ms, f.transfers
FROM mart.fact_interaction f
LEFT JOIN mart.dim_media m ON m.media_key = f.media_key
LEFT JOIN mart.dim_queue fq ON fq.queue_key = f.first_queue_key
LEFT JOIN mart.dim_queue lq ON lq.queue_key = f.last_queue_key
LEFT JOIN mart.dim_agent a ON a.agent_key = f.agent_key;

CREATE VIEW report.queue_hourly AS
SELECT h.hour, q.queue, m.media, h.offered, h.answered, h.abandoned, h.answered_within_sla,
       CASE WHEN h.wait_count > 0 THEN round(h.wait_ms_sum::numeric / h.wait_count)::bigint END AS avg_wait_ms,
       CASE WHEN h.talk_count > 0 THEN round(h.talk_ms_sum::numeric / h.talk_count)::bigint END AS avg_talk_ms
FROM mart.agg_queue_hourly h
JOIN mart.dim_queue q ON q.queue_key = h.queue_key
JOIN mart.dim_media m ON m.media_key = h.media_key;

CREATE VIEW report.agent_daily AS
SELECT d.day, a.agent, d.answered, d.talk_ms, d.hold_ms, d.ready_ms, d.not_ready_ms
FROM mart.agg_agent_daily d
JOIN mart.dim_agent a ON a.agent_key = d.agent_key;

CREATE VIEW report.completeness AS
SELECT source, site, complete_through, state FROM control.source_state;

CREATE VIEW report.data_gaps AS
SELECT source, gap_from, gap_to, reason, detected_at, backfilled_at FROM control.data_gaps;
