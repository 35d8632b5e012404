-- Raw updates from a platform that hands them out by id (Telegram's
-- getUpdates and webhook), recorded before the platform is told they
-- arrived. The polling offset is derived from here, and an update recorded
-- but not yet handled (a crash in between) is handled after a restart.
-- `payload` is the adapter's own JSON for the update.
CREATE TABLE platform_updates (
    platform    TEXT   NOT NULL,
    update_id   BIGINT NOT NULL,
    chat_id     TEXT   NOT NULL,
    payload     TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    handled_at  BIGINT,
    PRIMARY KEY (platform, update_id)
);
CREATE INDEX platform_updates_unhandled ON platform_updates (platform, handled_at, update_id);
