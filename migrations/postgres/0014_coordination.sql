-- Work that exactly one process may do at a time (polling one Telegram bot,
-- holding one Discord gateway shard) is taken with a leased row: the holder
-- renews `lease_until` while it works; when it dies the lease lapses and
-- another process takes the row. Works the same on SQLite and PostgreSQL,
-- and survives a cut connection (an advisory lock would vanish with it).
CREATE TABLE leader_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL
);
-- A platform's send limits shared by every process on the database: per
-- scope ('*' for the whole bot, a chat id for a group) the theoretical
-- arrival time of the next send (GCRA, Unix ms).
CREATE TABLE send_pacing (
    platform TEXT NOT NULL,
    scope TEXT NOT NULL,
    tat BIGINT NOT NULL,
    PRIMARY KEY (platform, scope)
);
