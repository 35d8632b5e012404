-- Embeddings of memory chunks, one per (model, text): the cache that keeps
-- an unchanged chunk from being embedded twice (a re-ingested source, or
-- two sources sharing a paragraph, reuse the vector). Chunks find theirs
-- by content_hash. The vector is f32 little-endian, `dims` wide; the
-- similarity search runs in process (no extension assumed).
CREATE TABLE memory_embeddings (
    -- Ever increasing: the in-process index compares the largest id to
    -- know when it is stale.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    dims         INTEGER NOT NULL,
    vector       BLOB    NOT NULL,
    created_at   BIGINT  NOT NULL,
    UNIQUE (model, content_hash)
);
CREATE INDEX memory_chunks_by_hash ON memory_chunks (content_hash);
