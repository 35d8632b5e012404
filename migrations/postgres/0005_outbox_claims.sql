-- Outbox rows are claimed, not assumed: a dispatcher takes a chat's oldest
-- pending row with a lease (claimed_by, claim_token, claimed_until), sends
-- it, and marks it delivered only while its claim token is still the row's.
-- A dispatcher that dies leaves the lease to lapse; another takes the row.
-- A chat's next row is never claimed while an earlier one is pending, so
-- order per chat holds across processes.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_token TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
-- Not before this time (Unix ms): backoff after a failure, a platform's
-- retry-after, or the chat's pace after its previous message.
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
-- Parts of a split message already sent (the platform id of the last one
-- is kept in platform_message_id), so a restart sends only the rest.
ALTER TABLE outbox ADD COLUMN parts_sent BIGINT NOT NULL DEFAULT 0;
-- When the current run of failures began, and when the operator was told
-- that this row has been failing for long.
ALTER TABLE outbox ADD COLUMN failing_since BIGINT;
ALTER TABLE outbox ADD COLUMN reported_at BIGINT;
CREATE INDEX outbox_chat_pending ON outbox (platform, chat_id, status, id);
