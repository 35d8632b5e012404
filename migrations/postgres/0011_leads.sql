-- E-mail idempotency: one outbox row per key, whoever queues it and however
-- often (a step repeated after a crash, two workers). The message itself is
-- the outbox row's payload (platform 'email', chat_id = the recipient).
CREATE TABLE email_keys (
    idempotency_key TEXT   PRIMARY KEY,
    recipient       TEXT   NOT NULL,
    created_at      BIGINT NOT NULL
);

-- Leads: people who asked for work, from the web hook or /lead. external_id
-- is the sender's id for the lead (or a hash of its text), so the same lead
-- posted twice is stored once. Every text here came from outside: data,
-- never instructions.
CREATE TABLE leads (
    id           BIGSERIAL PRIMARY KEY,
    external_id  TEXT   NOT NULL UNIQUE,
    source       TEXT   NOT NULL,
    name         TEXT   NOT NULL DEFAULT '',
    company      TEXT   NOT NULL DEFAULT '',
    email        TEXT   NOT NULL DEFAULT '',
    website      TEXT   NOT NULL DEFAULT '',
    message      TEXT   NOT NULL,
    fields       TEXT   NOT NULL DEFAULT '{}',
    tier         TEXT,
    score        BIGINT,
    reasons      TEXT,
    status       TEXT   NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'replied', 'pursuing', 'won', 'lost', 'declined')),
    run_id       TEXT,
    reminded_at  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    last_contact BIGINT
);
CREATE INDEX leads_by_status ON leads (status, last_contact);
