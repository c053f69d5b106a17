-- Interaction Database (IDB): what one collector ships, keyed by (source, seq).
-- One shipper per IDB (advisory lock), so ingest_id order is commit order: the extractor
-- reads new rows by ingest_id and never misses one committed behind its watermark.

CREATE SCHEMA IF NOT EXISTS idb;

CREATE SEQUENCE idb.ingest_seq;

CREATE TABLE idb.events (
    source      text        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq >= 0),
    ingest_id   bigint      NOT NULL DEFAULT nextval('idb.ingest_seq'),
    ts          timestamptz NOT NULL,
    type        text        NOT NULL CHECK (type IN (
                    'interaction.created', 'interaction.queued', 'interaction.answered',
                    'interaction.held', 'interaction.retrieved', 'interaction.transferred',
                    'interaction.abandoned', 'interaction.ended',
                    'agent.login', 'agent.ready', 'agent.not_ready', 'agent.logout')),
    interaction text,
    media       text CHECK (media IN ('voice', 'chat', 'email', 'callback')),
    direction   text CHECK (direction IN ('inbound', 'outbound', 'internal')),
    queue       text,
    agent       text,
    reason      text,
    attrs       jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, seq)
);

CREATE UNIQUE INDEX events_ingest_id ON idb.events (ingest_id);
CREATE INDEX events_received_at ON idb.events (received_at);

-- Per-source checkpoint: the highest seq and ts shipped, heartbeats included. Heartbeats are
-- not stored as events; they only advance this row.
CREATE TABLE idb.source_checkpoint (
    source     text        PRIMARY KEY,
    max_seq    bigint      NOT NULL,
    max_ts     timestamptz NOT NULL,
    ingest_id  bigint      NOT NULL DEFAULT nextval('idb.ingest_seq'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Where each collector's shipper stands, written in the same transaction as the rows it shipped.
CREATE TABLE idb.ship_position (
    collector   text        PRIMARY KEY,
    segment     bigint      NOT NULL,
    frame_offset bigint     NOT NULL,
    shipped_seq bigint,
    shipped_ts  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
