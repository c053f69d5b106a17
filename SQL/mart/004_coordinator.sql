-- What the coordinators and procedures need: whose mart this is and its role, fencing, retired
-- sources and IDBs, and the procedures (journaled, resumable, one at a time).

ALTER TABLE control.deployment
    -- The site this mart belongs to and its role in the current epoch (NULL until a coordinator
    -- or extractor of the site first writes them from the topology).
    ADD COLUMN site text,
    ADD COLUMN role text CHECK (role IN ('active', 'standby')),
    -- Set when a peer declared this site failed at a later epoch: nothing writes here until
    -- return to normal re-admits the site.
    ADD COLUMN fenced_reason text,
    ADD COLUMN fenced_epoch bigint;

-- Sources and IDBs taken out of extraction by disaster recovery (until return to normal).
CREATE TABLE control.retired (
    kind        text   NOT NULL CHECK (kind IN ('source', 'idb', 'site')),
    name        text   NOT NULL,
    epoch       bigint NOT NULL,
    retired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

-- One row per procedure run: which steps are done is what makes a rerun resume.
CREATE TABLE control.procedure (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,               -- 'dr declare', 'rtn start'
    target      text NOT NULL,               -- the failed site, or the site returning
    args        jsonb NOT NULL DEFAULT '{}',
    epoch_from  bigint NOT NULL,
    epoch_to    bigint NOT NULL,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    steps_done  text[] NOT NULL DEFAULT '{}',
    started_by  text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- At most one procedure runs at a time.
CREATE UNIQUE INDEX procedure_one_running ON control.procedure ((true)) WHERE status = 'running';
