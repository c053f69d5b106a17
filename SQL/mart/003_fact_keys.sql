-- Facts and aggregates take their dimension keys from joins with the dimensions inside the
-- extractor's own transaction, so a foreign-key trigger per fact row only re-checks what the join
-- already guaranteed — and it was the largest single cost of a cycle (a row lock on a dimension
-- row for every fact). Star schemas in warehouses usually leave these unenforced; so does this one.
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
             WHERE contype = 'f' AND connamespace = 'mart'::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
    END LOOP;
END $$;
