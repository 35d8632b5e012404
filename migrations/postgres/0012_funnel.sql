-- FUNNEL: what a publish step put out (or will at due_at), one row per run,
-- step and target channel. The publisher claims a due row (status
-- 'scheduled' -> 'sending' under claimed_until) so two processes or a
-- restart never post it twice; 'published' keeps the platform's message id
-- for a retraction; a scheduled row retracted before its time is
-- 'cancelled'.
CREATE TABLE publications (
    id              TEXT PRIMARY KEY,
    run_id          TEXT   NOT NULL,
    step            TEXT   NOT NULL,
    platform        TEXT   NOT NULL,
    channel_id      TEXT   NOT NULL,
    text            TEXT   NOT NULL,
    due_at          BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    claimed_until   BIGINT,
    message_id      TEXT,
    error           TEXT,
    notify_platform TEXT   NOT NULL,
    notify_chat     TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    published_at    BIGINT,
    retracted_at    BIGINT,
    UNIQUE (run_id, step, platform, channel_id)
);
CREATE INDEX publications_due ON publications (status, due_at);

-- FUNNEL: numbers the operator reports for a published run
-- (`/result RUN views=1200 clicks=40`); the latest value per metric wins.
CREATE TABLE results (
    run_id      TEXT   NOT NULL,
    metric      TEXT   NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, metric)
);
