-- Events that start flows, and each flow's autonomy level (issue 13).
-- Additive only.

-- Something that happened (a lead arrived, a draft was approved, a run
-- failed), written in the transaction of the change that caused it. The
-- worker claims a pending event (claim_token, claimed_until: a lapsed claim
-- is taken over) and marks it done once every subscribing flow started.
CREATE TABLE events (
    id              TEXT   PRIMARY KEY,
    kind            TEXT   NOT NULL,
    -- JSON, as text like every JSON column.
    payload         TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    claim_token     TEXT,
    claimed_until   BIGINT,
    done_at         BIGINT
);
CREATE INDEX events_pending ON events (done_at, created_at);

-- One run per (event, flow), whatever the number of workers.
CREATE TABLE event_runs (
    event_id   TEXT   NOT NULL REFERENCES events (id),
    flow       TEXT   NOT NULL,
    run_id     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, flow)
);
CREATE INDEX event_runs_by_run ON event_runs (run_id);

-- A flow's autonomy level as changed in chat or by graduation (the
-- settings file gives the level of a flow with no row here).
CREATE TABLE autonomy_levels (
    flow       TEXT   PRIMARY KEY,
    level      TEXT   NOT NULL CHECK (level IN ('always', 'borderline', 'never')),
    updated_at BIGINT NOT NULL
);

-- Every change of a flow's level: who, why (setting, command, button,
-- drop-back), from and to.
CREATE TABLE autonomy_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    flow       TEXT   NOT NULL,
    from_level TEXT   NOT NULL,
    to_level   TEXT   NOT NULL,
    changed_by TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX autonomy_changes_by_flow ON autonomy_changes (flow, created_at);
