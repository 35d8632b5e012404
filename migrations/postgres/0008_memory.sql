-- Memory: long-term knowledge (sources cut into chunks, full-text indexed),
-- the decision log's index, and working memory with an expiry.

-- One row per thing soloist knows from: a file, a fetched page, a note
-- sent with /remember, or a decision (an approved or rejected draft).
CREATE TABLE memory_sources (
    id           TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL UNIQUE,
    kind         TEXT   NOT NULL CHECK (kind IN ('file', 'url', 'note', 'decision')),
    title        TEXT   NOT NULL,
    url          TEXT   NOT NULL DEFAULT '',
    -- Who or what it came from (a path, a URL, a chat user): ingested text
    -- is data, and its origin travels with it.
    origin       TEXT   NOT NULL,
    content_hash TEXT   NOT NULL,
    weight       DOUBLE PRECISION NOT NULL DEFAULT 1,
    -- Kind-specific facts as JSON (a decision's status, reason, run, flow).
    meta         TEXT   NOT NULL DEFAULT '{}',
    ingested_at  BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL
);
CREATE INDEX memory_sources_by_kind ON memory_sources (kind);

CREATE TABLE memory_chunks (
    id           BIGSERIAL PRIMARY KEY,
    source_id    TEXT   NOT NULL REFERENCES memory_sources (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    section      TEXT   NOT NULL,
    text         TEXT   NOT NULL,
    content_hash TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    -- Headings weigh more than body text, as SQLite's bm25 column weights do.
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', section), 'A') || setweight(to_tsvector('english', text), 'B')
    ) STORED
);
CREATE INDEX memory_chunks_by_source ON memory_chunks (source_id, seq);
CREATE INDEX memory_chunks_tsv ON memory_chunks USING GIN (tsv);

-- A run's intermediate values, kept until they expire.
CREATE TABLE working_memory (
    run_id     TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX working_memory_by_expiry ON working_memory (expires_at);
