-- A cycle updates the fact rows of an open interaction in place when they change (its keys stay):
-- with room left on each page, PostgreSQL keeps the new version on the same page and touches no
-- index (a HOT update). New pages keep 30 % free for that.
ALTER TABLE mart.fact_interaction SET (fillfactor = 70);
ALTER TABLE mart.fact_queue_offer SET (fillfactor = 70);
