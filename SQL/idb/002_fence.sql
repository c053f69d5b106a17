-- Fencing marks written by disaster recovery into the surviving site's IDBs: an extractor of
-- the failed site that comes back reads these IDBs and learns that it holds an older epoch.
CREATE TABLE idb.fence (
    failed_site  text        NOT NULL,
    epoch        bigint      NOT NULL,
    declared_by  text        NOT NULL,
    declared_at  timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    PRIMARY KEY (failed_site, epoch)
);
