//! The outbox's delivery side: rows claimed with a lease, a chat's rows in
//! order, progress of split messages, and the delivered / retry / failed
//! marks. Rows are queued by `messages::enqueue_in`, inside the
//! transaction of the change that produced them.
//!
//! Claims are shaped for several dispatchers on one database: a row is
//! taken with a lease (`claimed_by`, `claim_token`, `claimed_until`), only
//! a chat's oldest pending row can be taken (so a chat's next message waits
//! while an earlier one is in flight or waiting to retry), and every mark
//! is guarded by the claim token, so a dispatcher whose lease lapsed cannot
//! mark a row another one now holds.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{Any, Transaction};

use super::{Backend, Store, StoreResult, corrupt, now_ms, to_json};
use crate::domain::{ApprovalId, ChatRef, Platform, RunId};

/// A message waiting in (or delivered from) the outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: i64,
    pub chat: ChatRef,
    pub run_id: Option<RunId>,
    pub approval_id: Option<ApprovalId>,
    pub message: crate::domain::Outbound,
    /// Failed attempts so far (transient failures count; waits do not).
    pub attempts: i64,
    /// Parts of a split message already sent, before a failure or a crash.
    pub parts_sent: usize,
    /// The platform's id for the last part sent, when parts were sent.
    pub last_part_id: Option<String>,
    /// When the current run of failures began (Unix ms).
    pub failing_since: Option<i64>,
    /// Whether the operator was already told this row keeps failing.
    pub reported: bool,
}

/// Who holds a batch of claimed rows: a dispatcher's id and the token of
/// this claim (every mark must present it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub token: String,
}

/// What became of a claimed row.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The platform took it. `chat_pace_until` holds the chat's next row
    /// back until then (Unix ms), so no dispatcher sends it too early.
    Delivered {
        id: i64,
        chat: ChatRef,
        platform_message_id: Option<String>,
        chat_pace_until: Option<i64>,
    },
    /// Try again at `at` (Unix ms). `failure` counts an attempt and keeps
    /// the reason; None is a plain wait (retry-after, pacing). `report`
    /// records that the operator was told about a long failure.
    Retry {
        id: i64,
        at: i64,
        failure: Option<String>,
        report: bool,
    },
    /// The platform refused it for good.
    Failed { id: i64, reason: String },
}

/// Rows in trouble, for `soloist doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxTrouble {
    /// Pending rows that have been failing for longer than asked.
    pub failing: i64,
    /// Approval offers and decision confirmations the platform refused
    /// lately.
    pub failed_approvals: i64,
}

const COLUMNS: &str = "id, chat_id, run_id, approval_id, payload, attempts, parts_sent, \
                       platform_message_id, failing_since, reported_at";

type Row = (
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

impl Store {
    /// Undelivered messages for a platform, oldest first (whoever holds
    /// them). The terminal reads its replies this way; tests look with it.
    pub async fn pending_outbox(
        &self,
        platform: Platform,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM outbox WHERE platform = $1 AND status = 'pending' ORDER BY id LIMIT $2"
        );
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(platform.as_str())
            .bind(limit)
            .fetch_all(&self.reads)
            .await?;
        rows.into_iter()
            .map(|row| from_row(platform, row))
            .collect()
    }

    /// Claims up to `limit` rows that may go now: each the oldest pending
    /// row of its chat, due, and not held under a live lease. Chats that
    /// waited least recently come first (`next_attempt_at`), then the
    /// oldest rows, so one busy chat gets one row per round like any other.
    pub async fn claim_outbox(
        &self,
        platform: Platform,
        claim: &Claim,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<OutboxMessage>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // Each chat's head (its oldest pending row) is found by one grouped
        // pass over the pending rows. A per-row NOT EXISTS probe said the
        // same, but on a table not yet analysed (a burst into a fresh
        // database) PostgreSQL planned it as a nested loop over every
        // pending row: 273 ms per claim at 4,000 pending, against 3.5 ms.
        // PostgreSQL: rows another process is claiming this instant are
        // skipped, not waited for. SQLite has one writer: the UPDATE alone
        // is the guard.
        // The heads are read in the statement's snapshot, but a locked row
        // is checked again only against the conditions on `o` itself, in
        // its newest version: so `o.status = 'pending'` must be among them.
        // Without it a head another process claimed, sent and marked
        // delivered between this snapshot and this lock was claimed and
        // sent again (the cluster bench saw it with two processes).
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claim_token = $2, claimed_until = $3
             WHERE id IN (
                SELECT o.id FROM outbox o
                WHERE o.id IN (
                      SELECT MIN(h.id) FROM outbox h
                      WHERE h.platform = $4 AND h.status = 'pending'
                      GROUP BY h.chat_id)
                  AND o.status = 'pending'
                  AND o.next_attempt_at <= $5
                  AND (o.claimed_until IS NULL OR o.claimed_until < $5)
                ORDER BY o.next_attempt_at, o.id LIMIT $6 {lock})
             RETURNING {COLUMNS}"
        );
        let mut tx = self.claim_transaction().await?;
        let mut rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&claim.owner)
            .bind(&claim.token)
            .bind(now + millis(lease))
            .bind(platform.as_str())
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        self.commit_durably(tx).await?;
        rows.sort_by_key(|row| row.0);
        rows.into_iter()
            .map(|row| from_row(platform, row))
            .collect()
    }

    /// [`Store::claim_outbox`] for the named chats only: the head of each
    /// (its oldest pending row) when it is due and unclaimed. What a wake
    /// names, found through the `(platform, chat_id, status, id)` index
    /// instead of a pass over every pending row.
    pub async fn claim_outbox_chats(
        &self,
        platform: Platform,
        claim: &Claim,
        lease: Duration,
        chats: &[String],
    ) -> StoreResult<Vec<OutboxMessage>> {
        if chats.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let list = self.backend.json_texts("$6");
        let mut tx = self.claim_transaction().await?;
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claim_token = $2, claimed_until = $3
             WHERE id IN (
                SELECT o.id FROM outbox o
                WHERE o.id IN (
                      SELECT MIN(h.id) FROM outbox h
                      WHERE h.platform = $4 AND h.status = 'pending' AND h.chat_id IN ({list})
                      GROUP BY h.chat_id)
                  AND o.status = 'pending'
                  AND o.next_attempt_at <= $5
                  AND (o.claimed_until IS NULL OR o.claimed_until < $5)
                {lock})
             RETURNING {COLUMNS}"
        );
        let mut rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&claim.owner)
            .bind(&claim.token)
            .bind(now + millis(lease))
            .bind(platform.as_str())
            .bind(now)
            .bind(to_json(&chats)?)
            .fetch_all(&mut *tx)
            .await?;
        self.commit_durably(tx).await?;
        rows.sort_by_key(|row| row.0);
        rows.into_iter()
            .map(|row| from_row(platform, row))
            .collect()
    }

    /// A transaction for a claim. On PostgreSQL its commit does not wait
    /// for the disk (`synchronous_commit = off` for it alone): a claim
    /// lost in a crash of PostgreSQL itself (not of soloist's process)
    /// only frees its rows again, and the later delivered mark, which does
    /// wait, writes every earlier change to disk with it. So the window in
    /// which a message can be sent twice stays the documented one (sent,
    /// not yet marked), and a claim no longer waits for a disk flush on
    /// the way of every reply.
    async fn claim_transaction(&self) -> StoreResult<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Extends the lease of every row `owner` holds on `platform`.
    pub async fn renew_outbox_claims(
        &self,
        platform: Platform,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE outbox SET claimed_until = $1
             WHERE platform = $2 AND claimed_by = $3 AND status = 'pending'",
        )
        .bind(now_ms() + millis(lease))
        .bind(platform.as_str())
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Drops every claim on `platform`'s rows. Only for SQLite at start:
    /// one process uses a SQLite file, so any claim there is a dead
    /// process's and need not wait for its lease to lapse.
    pub async fn release_outbox_claims(&self, platform: Platform) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, claim_token = NULL, claimed_until = NULL
             WHERE platform = $1 AND status = 'pending' AND claim_token IS NOT NULL",
        )
        .bind(platform.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Stores that the first `parts_sent` parts of a split message went,
    /// the last with `platform_message_id`. False when the claim was lost.
    pub async fn record_outbox_progress(
        &self,
        id: i64,
        token: &str,
        parts_sent: usize,
        platform_message_id: &str,
    ) -> StoreResult<bool> {
        let recorded = sqlx::query(
            "UPDATE outbox SET parts_sent = $1, platform_message_id = $2
             WHERE id = $3 AND claim_token = $4 AND status = 'pending'",
        )
        .bind(i64::try_from(parts_sent).unwrap_or(i64::MAX))
        .bind(platform_message_id)
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        self.flushed(recorded).await
    }

    /// Records what became of claimed rows, each with its claim token, in
    /// one transaction (under load, one commit for many deliveries).
    /// Returns the ids whose claim was no longer that token's (its lease lapsed and another dispatcher took it):
    /// nothing is recorded for those.
    pub async fn settle_outbox(
        &self,
        settlements: &[(String, Settlement)],
    ) -> StoreResult<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let mut lost = Vec::new();
        let delivered: Vec<&(String, Settlement)> = settlements
            .iter()
            .filter(|(_, settlement)| matches!(settlement, Settlement::Delivered { .. }))
            .collect();
        let settled = settle_delivered_in(&mut tx, self.backend, &delivered).await?;
        for (token, settlement) in settlements {
            if !settle_in(&mut tx, token, settlement, &settled).await? {
                lost.push(settlement_id(settlement));
            }
        }
        self.commit_durably(tx).await?;
        Ok(lost)
    }

    /// Rows in trouble: pending and failing since before `failing_before`
    /// (Unix ms), and approval messages queued since `refused_since` that
    /// the platform refused.
    pub async fn outbox_trouble(
        &self,
        failing_before: i64,
        refused_since: i64,
    ) -> StoreResult<OutboxTrouble> {
        let failing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND failing_since < $1",
        )
        .bind(failing_before)
        .fetch_one(&self.reads)
        .await?;
        let failed_approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox
             WHERE status = 'failed' AND approval_role IS NOT NULL AND created_at >= $1",
        )
        .bind(refused_since)
        .fetch_one(&self.reads)
        .await?;
        Ok(OutboxTrouble {
            failing,
            failed_approvals,
        })
    }

    pub async fn mark_delivered(
        &self,
        id: i64,
        platform_message_id: Option<&str>,
    ) -> StoreResult<()> {
        self.mark_delivered_many(&[(id, platform_message_id.map(String::from))])
            .await
    }

    /// Marks messages delivered without a claim (the terminal, which has
    /// no dispatcher), in one transaction.
    pub async fn mark_delivered_many(
        &self,
        delivered: &[(i64, Option<String>)],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for (id, platform_message_id) in delivered {
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', delivered_at = $1, platform_message_id = $2,
                        attempts = attempts + 1
                 WHERE id = $3",
            )
            .bind(now)
            .bind(platform_message_id.as_deref())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        self.commit_durably(tx).await?;
        Ok(())
    }
}

/// Marks every delivered row whose claim is still its token's, in one
/// statement (a statement a row was most of the outbox's share of the
/// database's work under a burst); returns the ids marked.
async fn settle_delivered_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    delivered: &[&(String, Settlement)],
) -> StoreResult<HashSet<i64>> {
    #[derive(serde::Serialize)]
    struct Mark<'a> {
        id: i64,
        token: &'a str,
        mid: Option<&'a str>,
    }
    let marks: Vec<Mark> = delivered
        .iter()
        .filter_map(|(token, settlement)| match settlement {
            Settlement::Delivered {
                id,
                platform_message_id,
                ..
            } => Some(Mark {
                id: *id,
                token,
                mid: platform_message_id.as_deref(),
            }),
            _ => None,
        })
        .collect();
    if marks.is_empty() {
        return Ok(HashSet::new());
    }
    let marks_table = match backend {
        Backend::Sqlite => {
            "SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.token') AS token,
                    json_extract(value, '$.mid') AS mid
             FROM json_each($2)"
        }
        Backend::Postgres => {
            "SELECT CAST(e->>'id' AS BIGINT) AS id, e->>'token' AS token, e->>'mid' AS mid
             FROM json_array_elements(CAST($2 AS JSON)) e"
        }
    };
    let sql = format!(
        "UPDATE outbox SET status = 'delivered', delivered_at = $1,
                platform_message_id = COALESCE(m.mid, outbox.platform_message_id),
                failing_since = NULL, claimed_by = NULL, claim_token = NULL, claimed_until = NULL
         FROM ({marks_table}) m
         WHERE outbox.id = m.id AND outbox.claim_token = m.token AND outbox.status = 'pending'
         RETURNING outbox.id"
    );
    let settled: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(to_json(&marks)?)
        .fetch_all(&mut **tx)
        .await?;
    Ok(settled.into_iter().collect())
}

/// Records what became of one claimed row, if the claim is still
/// `token`'s; a delivered row was marked already, with the others, when
/// its id is in `settled`, and only its chat's pace is left to record.
async fn settle_in(
    tx: &mut Transaction<'_, Any>,
    token: &str,
    settlement: &Settlement,
    settled: &HashSet<i64>,
) -> StoreResult<bool> {
    let now = now_ms();
    let query = match settlement {
        Settlement::Delivered {
            id,
            chat,
            chat_pace_until,
            ..
        } => {
            let held = settled.contains(id);
            if let (true, Some(until)) = (held, chat_pace_until) {
                pace_next(tx, chat, *until).await?;
            }
            return Ok(held);
        }
        Settlement::Retry {
            id,
            at,
            failure: Some(reason),
            report,
        } => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2,
                    failing_since = COALESCE(failing_since, $3),
                    reported_at = CASE WHEN $4 = 1 THEN $3 ELSE reported_at END,
                    claimed_by = NULL, claim_token = NULL, claimed_until = NULL
             WHERE id = $5 AND claim_token = $6 AND status = 'pending'",
        )
        .bind(*at)
        .bind(format!("error: {}", crate::domain::clip(reason, 200)))
        .bind(now)
        .bind(i64::from(*report))
        .bind(*id),
        Settlement::Retry {
            id,
            at,
            failure: None,
            ..
        } => sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1,
                    claimed_by = NULL, claim_token = NULL, claimed_until = NULL
             WHERE id = $2 AND claim_token = $3 AND status = 'pending'",
        )
        .bind(*at)
        .bind(*id),
        Settlement::Failed { id, reason } => sqlx::query(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $1,
                    claimed_by = NULL, claim_token = NULL, claimed_until = NULL
             WHERE id = $2 AND claim_token = $3 AND status = 'pending'",
        )
        .bind(format!("error: {}", crate::domain::clip(reason, 200)))
        .bind(*id),
    };
    Ok(query.bind(token).execute(&mut **tx).await?.rows_affected() == 1)
}

/// Holds a chat's next pending row back until `until` (the chat's pace),
/// unless it already waits longer.
async fn pace_next(tx: &mut Transaction<'_, Any>, chat: &ChatRef, until: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1
         WHERE id = (SELECT MIN(id) FROM outbox
                     WHERE platform = $2 AND chat_id = $3 AND status = 'pending')
           AND next_attempt_at < $1",
    )
    .bind(until)
    .bind(chat.platform.as_str())
    .bind(&chat.chat_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn settlement_id(settlement: &Settlement) -> i64 {
    match settlement {
        Settlement::Delivered { id, .. }
        | Settlement::Retry { id, .. }
        | Settlement::Failed { id, .. } => *id,
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn from_row(platform: Platform, row: Row) -> StoreResult<OutboxMessage> {
    let (
        id,
        chat_id,
        run_id,
        approval_id,
        payload,
        attempts,
        parts_sent,
        last_part_id,
        failing_since,
        reported_at,
    ) = row;
    Ok(OutboxMessage {
        id,
        chat: ChatRef::new(platform, chat_id),
        run_id: run_id
            .map(|r| r.parse())
            .transpose()
            .map_err(|_| corrupt("outbox run id"))?,
        approval_id: approval_id
            .map(|a| a.parse())
            .transpose()
            .map_err(|_| corrupt("outbox approval id"))?,
        message: serde_json::from_str(&payload)
            .map_err(|e| corrupt(format!("outbox payload: {e}")))?,
        attempts,
        parts_sent: usize::try_from(parts_sent).unwrap_or(0),
        last_part_id: last_part_id.filter(|_| parts_sent > 0),
        failing_since,
        reported: reported_at.is_some(),
    })
}
