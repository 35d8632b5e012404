-- The front door (src/frontdoor/): an update whose handling failed is
-- retried a few times; one that keeps failing is marked failed (and the
-- operator told) instead of being marked handled or retried forever.
ALTER TABLE platform_updates ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE platform_updates ADD COLUMN failed_at BIGINT;

-- Interactions acknowledged but not answered yet (Discord's deferred
-- "thinking…" responses). Kept so that after a restart the reply still
-- fills the deferred response while its token is valid (15 minutes);
-- rows are deleted once answered and pruned once expired.
CREATE TABLE pending_interactions (
    platform    TEXT   NOT NULL,
    update_key  TEXT   NOT NULL,
    channel_id  TEXT   NOT NULL,
    token       TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    opened_at   BIGINT NOT NULL,
    PRIMARY KEY (platform, update_key)
);
