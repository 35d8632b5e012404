-- Files messages and e-mails carry (a proposal's PDF), stored once by their
-- SHA-256 so an outbox row names a file instead of holding its bytes.
CREATE TABLE blobs (
    id           TEXT PRIMARY KEY,
    content_type TEXT   NOT NULL,
    bytes        BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL
);

-- An offer being prepared by /offer: the key variables the operator
-- reviews with buttons (discount, start date) before a run makes the
-- proposal. Prices are never stored here: they follow from [[offers]].
CREATE TABLE offer_drafts (
    id               TEXT PRIMARY KEY,
    platform         TEXT   NOT NULL,
    chat_id          TEXT   NOT NULL,
    requested_by     TEXT   NOT NULL,
    client           TEXT   NOT NULL,
    offer_name       TEXT   NOT NULL,
    email            TEXT,
    start_date       TEXT   NOT NULL,
    discount_percent BIGINT NOT NULL DEFAULT 0,
    status           TEXT   NOT NULL,
    run_id           TEXT UNIQUE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
