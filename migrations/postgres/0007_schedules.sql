-- Schedules that fire once per tick and never skip silently (issue 12).
-- Additive: the schedules and schedule_fires tables come from 0001.

-- What to do with ticks missed while no process ran: 'once' fires one late
-- run for all of them, 'skip' fires none; both record the miss.
ALTER TABLE schedules ADD COLUMN catch_up TEXT NOT NULL DEFAULT 'once';
ALTER TABLE schedules ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
-- The first tick not yet handled (Unix ms); NULL until first planned.
ALTER TABLE schedules ADD COLUMN next_fire_at BIGINT;
-- The cron the config file held at the last start: a config edit wins over
-- a chat edit only when the file itself changed.
ALTER TABLE schedules ADD COLUMN config_cron TEXT;
ALTER TABLE schedules ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- The business-local date of a once-a-day schedule's tick: cron repeats a
-- 01:30 tick on the fall-back day; this key lets only one of them fire.
-- NULL for schedules that fire more than once a day.
ALTER TABLE schedule_fires ADD COLUMN local_date TEXT;
-- 'pending' until its job ran (the digest queued, the run started).
ALTER TABLE schedule_fires ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE schedule_fires ADD COLUMN late BIGINT NOT NULL DEFAULT 0;
ALTER TABLE schedule_fires ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE schedule_fires ADD COLUMN done_at BIGINT;
-- A pending fire's job runs under a claim: two processes at one tick run
-- it once; a process that died in it leaves the claim to lapse.
ALTER TABLE schedule_fires ADD COLUMN claimed_until BIGINT;
CREATE UNIQUE INDEX schedule_fires_once_a_day ON schedule_fires (schedule_id, local_date);
CREATE INDEX schedule_fires_by_status ON schedule_fires (status, created_at);
CREATE INDEX schedules_due ON schedules (paused, next_fire_at);

-- Ticks that did not fire on time, and what was done about them; the digest
-- reports them.
CREATE TABLE schedule_misses (
    id          BIGSERIAL PRIMARY KEY,
    schedule_id TEXT   NOT NULL REFERENCES schedules (id),
    first_tick  BIGINT NOT NULL,
    last_tick   BIGINT NOT NULL,
    ticks       BIGINT NOT NULL,
    action      TEXT   NOT NULL CHECK (action IN ('caught_up', 'skipped')),
    detected_at BIGINT NOT NULL,
    UNIQUE (schedule_id, first_tick)
);
CREATE INDEX schedule_misses_by_time ON schedule_misses (detected_at);
