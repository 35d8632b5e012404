-- soloist schema, PostgreSQL flavour. The SQLite file beside this one holds
-- the same tables; times are Unix milliseconds (BIGINT) and ids UUID text in
-- both, so one set of queries serves both backends.

CREATE TABLE inbound_updates (
    platform     TEXT   NOT NULL,
    update_key   TEXT   NOT NULL,
    chat_id      TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT,
    PRIMARY KEY (platform, update_key)
);

-- One row per chat the bot has talked in (a Telegram chat, a Discord
-- channel, the terminal).
CREATE TABLE conversations (
    platform      TEXT   NOT NULL,
    chat_id       TEXT   NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    PRIMARY KEY (platform, chat_id)
);

CREATE TABLE messages (
    id         BIGSERIAL PRIMARY KEY,
    platform   TEXT   NOT NULL,
    chat_id    TEXT   NOT NULL,
    direction  TEXT   NOT NULL CHECK (direction IN ('in', 'out')),
    user_id    TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_chat ON messages (platform, chat_id, id);

CREATE TABLE runs (
    id              TEXT   PRIMARY KEY,
    flow            TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    waiting_for     TEXT,
    idempotency_key TEXT   NOT NULL UNIQUE,
    platform        TEXT   NOT NULL,
    chat_id         TEXT   NOT NULL,
    requested_by    TEXT   NOT NULL,
    input           TEXT   NOT NULL,
    summary         TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX runs_by_status ON runs (status, lease_until);
CREATE INDEX runs_by_chat ON runs (platform, chat_id, status);

-- Append-only: a run's whole history, from which its state is rebuilt.
CREATE TABLE journal (
    run_id     TEXT   NOT NULL REFERENCES runs (id),
    seq        BIGINT NOT NULL,
    event      TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE approvals (
    id          TEXT   PRIMARY KEY,
    run_id      TEXT   NOT NULL REFERENCES runs (id),
    step        TEXT   NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('pending', 'decided')),
    draft       TEXT   NOT NULL,
    platform    TEXT   NOT NULL,
    chat_id     TEXT   NOT NULL,
    decision    TEXT,
    decided_by  TEXT,
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT
);
CREATE INDEX approvals_pending ON approvals (status, created_at);

-- Callback data is an opaque token; what it means lives only here.
CREATE TABLE approval_buttons (
    token       TEXT PRIMARY KEY,
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    decision    TEXT NOT NULL
);

CREATE TABLE decisions (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT   NOT NULL REFERENCES runs (id),
    approval_id TEXT   NOT NULL REFERENCES approvals (id),
    decision    TEXT   NOT NULL,
    decided_by  TEXT   NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE artifacts (
    id         TEXT   PRIMARY KEY,
    run_id     TEXT   NOT NULL REFERENCES runs (id),
    kind       TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    content    TEXT   NOT NULL,
    note       TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE cost_ledger (
    id                  BIGSERIAL PRIMARY KEY,
    run_id              TEXT,
    step                TEXT,
    flow                TEXT,
    provider            TEXT   NOT NULL,
    model               TEXT   NOT NULL,
    tier                TEXT   NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    -- Never NULL: sqlx's Any driver caches a statement with the parameter
    -- types of its first use, and a NULL float there breaks later real
    -- values on PostgreSQL. `priced` says whether cost_usd is known.
    cost_usd            DOUBLE PRECISION NOT NULL DEFAULT 0,
    priced              BIGINT NOT NULL DEFAULT 0,
    -- Sent through a provider's batch API, and what that saved against the
    -- interactive price.
    batched             BIGINT NOT NULL DEFAULT 0,
    saved_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_ms          BIGINT NOT NULL,
    cache_hit           BIGINT NOT NULL DEFAULT 0,
    outcome             TEXT   NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX cost_ledger_by_time ON cost_ledger (created_at);

CREATE TABLE schedules (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    cron       TEXT   NOT NULL,
    timezone   TEXT   NOT NULL,
    flow       TEXT   NOT NULL,
    input      TEXT   NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);

-- One row per due tick: the key that stops a restart from firing twice.
CREATE TABLE schedule_fires (
    schedule_id   TEXT   NOT NULL REFERENCES schedules (id),
    scheduled_for BIGINT NOT NULL,
    run_id        TEXT,
    PRIMARY KEY (schedule_id, scheduled_for)
);

-- Every message the bot sends is a row first, then a delivery.
CREATE TABLE outbox (
    id                  BIGSERIAL PRIMARY KEY,
    platform            TEXT   NOT NULL,
    chat_id             TEXT   NOT NULL,
    run_id              TEXT,
    approval_id         TEXT,
    approval_role       TEXT   CHECK (approval_role IN ('offer', 'closed')),
    payload             TEXT   NOT NULL,
    status              TEXT   NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    platform_message_id TEXT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    delivered_at        BIGINT
);
CREATE INDEX outbox_by_approval ON outbox (approval_id);
CREATE INDEX outbox_pending ON outbox (platform, status, id);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    platform   TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    detail     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Spend and in-flight reservations per period ('day:2026-11-25' in the
-- business's time zone, 'month:2026-11'). A call reserves its worst-case
-- cost here before it starts, with a guarded UPDATE, so concurrent calls
-- can never overshoot the cap together.
CREATE TABLE budget_periods (
    period        TEXT PRIMARY KEY,
    spent_usd     DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved_usd  DOUBLE PRECISION NOT NULL DEFAULT 0,
    extra_cap_usd DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- Buttons that are not approval decisions (raise today's cap, retry a run,
-- pick a flow): an opaque token, the action it stands for, used once.
CREATE TABLE action_buttons (
    token      TEXT   PRIMARY KEY,
    action     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Non-urgent model calls, queued to be sent together through a provider's
-- batch API (half price at OpenAI), with the budget they reserved.
CREATE TABLE batch_items (
    id           TEXT   PRIMARY KEY,
    run_id       TEXT   NOT NULL REFERENCES runs (id),
    step         TEXT   NOT NULL,
    flow         TEXT   NOT NULL,
    provider     TEXT   NOT NULL,
    model        TEXT   NOT NULL,
    tier         TEXT   NOT NULL,
    request      TEXT   NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('queued', 'submitted', 'done', 'failed')),
    batch_id     TEXT,
    reserved_usd DOUBLE PRECISION NOT NULL,
    budget_day   TEXT   NOT NULL,
    budget_month TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX batch_items_by_status ON batch_items (status, provider, created_at);
