-- What the extractor needs beyond the first schema: which raw events are transformed, the
-- answering agent and hold time of each offer (for agent_daily), per-source discard windows,
-- and the extractor's own completeness mark.

ALTER TABLE mart.event ADD COLUMN transformed boolean NOT NULL DEFAULT false;
CREATE INDEX event_pending ON mart.event (ts) WHERE NOT transformed;

ALTER TABLE mart.fact_queue_offer
    ADD COLUMN agent_key integer REFERENCES mart.dim_agent,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN hold_ms bigint NOT NULL DEFAULT 0;
CREATE INDEX fact_queue_offer_agent ON mart.fact_queue_offer (agent_key, answered_at) WHERE agent_key IS NOT NULL;

ALTER TABLE control.source_state
    ADD COLUMN stuck_since timestamptz,
    -- With late_data: discard, events of the source with ts in (discard_after, discard_before) are dropped.
    ADD COLUMN discard_after timestamptz,
    ADD COLUMN discard_before timestamptz;

CREATE TABLE control.extractor (
    site        text PRIMARY KEY,
    epoch       bigint NOT NULL,
    complete_through timestamptz,
    cycles      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
