-- Every budget reservation is a row while it holds money, so one whose call
-- died (a crash, a dropped future, a failed write) can be found and released
-- instead of shrinking the budget forever. A settled reservation is deleted
-- (its ledger row is the record); one released because its call never
-- settled stays as `abandoned` or `swept`, with the reason, for `/cost` and
-- the audit.
CREATE TABLE budget_reservations (
    id           TEXT   PRIMARY KEY,
    budget_day   TEXT   NOT NULL,
    budget_month TEXT   NOT NULL,
    amount_usd   DOUBLE PRECISION NOT NULL,
    -- 'call' while an interactive call holds it; 'batch' once a committed
    -- batch item does (batches may take a day: the sweeper leaves them).
    holder       TEXT   NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('held', 'abandoned', 'swept')),
    reason       TEXT,
    created_at   BIGINT NOT NULL,
    released_at  BIGINT
);
CREATE INDEX budget_reservations_open ON budget_reservations (status, holder, created_at);
CREATE INDEX budget_reservations_released ON budget_reservations (released_at);

-- A batch item's reservation row, and the submission it goes out in: the
-- submission id is written before the provider is asked to create the
-- batch, and travels in the batch's metadata, so after a crash between the
-- two the batch is found at the provider instead of created (and paid) twice.
ALTER TABLE batch_items ADD COLUMN reservation_id TEXT;
ALTER TABLE batch_items ADD COLUMN submission_id TEXT;
ALTER TABLE batch_items ADD COLUMN submission_started_at BIGINT;
