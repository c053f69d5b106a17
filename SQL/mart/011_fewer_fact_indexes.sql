-- Indexes no statement uses: the reporting views read the aggregates (kept up to date by the
-- extractor), and the extractor finds facts by interaction (`fact_queue_offer_interaction`) and
-- by agent (`fact_agent_state_agent`). Each cost every fact row written an index entry — most
-- rows are rewritten several times while their interaction is open.
DROP INDEX IF EXISTS mart.fact_queue_offer_hour;
DROP INDEX IF EXISTS mart.fact_queue_offer_agent;
DROP INDEX IF EXISTS mart.fact_agent_state_day;
