-- Every guardrail decision (redacted, flagged, blocked, limited, the origin
-- of a run's text), linked to its run when there is one. Details are
-- sentences and counts, never the values a guardrail kept back.
CREATE TABLE guardrail_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT,
    kind       TEXT   NOT NULL,
    detail     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX guardrail_events_by_run ON guardrail_events (run_id, id);

-- How many personal-data items a model call had replaced by placeholders.
ALTER TABLE cost_ledger ADD COLUMN redacted_items BIGINT NOT NULL DEFAULT 0;
