//! Inbound updates (deduplicated), the conversation log, the outbox, and the
//! audit log.

use sqlx::{Any, Transaction};

use std::collections::HashSet;

use super::to_json;
use super::{Backend, Store, StoreResult, now_ms};
use crate::domain::{ApprovalRole, ChatRef, Inbound, InboundContent, Outbound, Platform, RunId};

/// What the store knew of an inbound update before this delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRecord {
    /// First time seen: handle it.
    Fresh,
    /// Seen before but its handling never finished (a crash): handle it
    /// again; every effect of handling is idempotent.
    Unfinished,
    /// Already handled: drop it.
    Duplicate,
}

impl Store {
    /// Records an update the first time it arrives, with its text in the
    /// conversation log. Most updates were recorded on arrival (the front
    /// door records each batch before handing it on), so their row is
    /// looked up first: one statement, where inserting first took two.
    ///
    /// The look is a plain read, not a transaction of its own: one that only
    /// read still cost a BEGIN and a COMMIT on SQLite's one writer
    /// connection, and it ended before the caller acted anyway. A row found
    /// unhandled may be handled by then either way; the caller's own commit
    /// (marking it handled only if it is not) decides.
    pub async fn record_inbound(&self, inbound: &Inbound) -> StoreResult<InboundRecord> {
        if let Some(known) = recorded_state(&self.reads, inbound).await? {
            return Ok(known);
        }
        let mut tx = self.pool.begin().await?;
        let record = record_inbound_in(&mut tx, inbound).await?;
        self.commit_durably(tx).await?;
        Ok(record)
    }

    /// Records an update that only reads and its replies in one
    /// transaction (the inbound, the log, the queued replies, handled).
    /// False, writing nothing, when it was handled before.
    ///
    /// The update is most likely recorded already (on arrival) and not yet
    /// handled, so it is marked handled first: one statement. Only when
    /// that finds nothing to mark is it recorded, then marked.
    pub async fn answer_in_one(
        &self,
        inbound: &Inbound,
        replies: &[Outbound],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let marked = mark_processed_in(&mut tx, inbound).await?
            || (record_inbound_in(&mut tx, inbound).await? != InboundRecord::Duplicate
                && mark_processed_in(&mut tx, inbound).await?);
        if !marked {
            tx.rollback().await?;
            return Ok(false);
        }
        queue_replies_in(&mut tx, inbound, replies).await?;
        self.commit_durably(tx).await?;
        Ok(true)
    }

    /// Marks the update handled and queues the replies, in one transaction:
    /// a crash before this point re-handles the update, after it never.
    pub async fn finish_inbound(&self, inbound: &Inbound, replies: &[Outbound]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        finish_inbound_in(&mut tx, inbound, replies).await?;
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Queues one message outside any other change.
    pub async fn enqueue(&self, chat: &ChatRef, message: &Outbound) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        enqueue_in(&mut tx, chat, None, message).await?;
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Records that someone tried something they may not do.
    pub async fn audit(
        &self,
        platform: Platform,
        user_id: &str,
        action: &str,
        detail: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (platform, user_id, action, detail, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(platform.as_str())
        .bind(user_id)
        .bind(action)
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }
}

/// Records an update the first time it arrives, with its text in the
/// conversation log; says what was known of it before.
pub(super) async fn record_inbound_in(
    tx: &mut Transaction<'_, Any>,
    inbound: &Inbound,
) -> StoreResult<InboundRecord> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_updates (platform, update_key, chat_id, user_id, received_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, update_key) DO NOTHING",
    )
    .bind(inbound.chat.platform.as_str())
    .bind(&inbound.update_key)
    .bind(&inbound.chat.chat_id)
    .bind(&inbound.user_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // Recorded by someone else first: it is there now.
        return Ok(recorded_state_in(tx, inbound)
            .await?
            .unwrap_or(InboundRecord::Unfinished));
    }
    upsert_conversation_in(tx, &inbound.chat, now_ms()).await?;
    log_message(
        tx,
        &inbound.chat,
        "in",
        &inbound.user_id,
        &logged_text(inbound),
    )
    .await?;
    Ok(InboundRecord::Fresh)
}

/// What the conversation log keeps of an inbound update.
fn logged_text(inbound: &Inbound) -> String {
    match &inbound.content {
        InboundContent::Text(text) => text.clone(),
        InboundContent::Button(_) => "[button]".to_string(),
        InboundContent::Unsupported(what) => format!("[{what}]"),
    }
}

/// [`record_inbound_in`] for a batch of fresh arrivals, in three
/// statements whatever their number: the dedup rows, then, for the rows
/// new to it, each chat's row and the lines of the conversation log, in
/// the batch's order.
pub(super) async fn record_inbounds_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    inbounds: &[&Inbound],
) -> StoreResult<()> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        platform: &'a str,
        update_key: &'a str,
        chat_id: &'a str,
        user_id: &'a str,
        text: String,
    }
    if inbounds.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<Row> = inbounds
        .iter()
        .map(|inbound| Row {
            platform: inbound.chat.platform.as_str(),
            update_key: &inbound.update_key,
            chat_id: &inbound.chat.chat_id,
            user_id: &inbound.user_id,
            text: logged_text(inbound),
        })
        .collect();
    let table = |fields: &[&str]| {
        let fields: Vec<(&str, bool)> = fields.iter().map(|f| (*f, false)).collect();
        backend.json_rows("$1", &fields)
    };
    let sql = format!(
        "INSERT INTO inbound_updates (platform, update_key, chat_id, user_id, received_at)
         SELECT platform, update_key, chat_id, user_id, $2 FROM ({}) r WHERE true ORDER BY n
         ON CONFLICT (platform, update_key) DO NOTHING
         RETURNING platform, update_key",
        table(&["platform", "update_key", "chat_id", "user_id"])
    );
    let inserted: HashSet<(String, String)> =
        sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
            .bind(to_json(&rows)?)
            .bind(now)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    // Recorded before (a redelivery under another raw id): logged then.
    // A key twice in this batch was inserted once: logged once.
    let mut taken = HashSet::new();
    let fresh: Vec<Row> = rows
        .into_iter()
        .filter(|row| {
            let key = (row.platform.to_string(), row.update_key.to_string());
            inserted.contains(&key) && taken.insert(key)
        })
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let mut chats = HashSet::new();
    let chat_rows: Vec<&Row> = fresh
        .iter()
        .filter(|row| chats.insert((row.platform, row.chat_id)))
        .collect();
    // One row a chat: an upsert may not touch a row twice in a statement.
    let sql = format!(
        "INSERT INTO conversations (platform, chat_id, first_seen_at, last_seen_at)
         SELECT platform, chat_id, $2, $2 FROM ({}) r WHERE true
         ON CONFLICT (platform, chat_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        table(&["platform", "chat_id"])
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_json(&chat_rows)?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let sql = format!(
        "INSERT INTO messages (platform, chat_id, direction, user_id, text, created_at)
         SELECT platform, chat_id, 'in', user_id, text, $2 FROM ({}) r ORDER BY n",
        table(&["platform", "chat_id", "user_id", "text"])
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_json(&fresh)?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What is known of an update already recorded: handled (a duplicate) or
/// not yet; None when it was never recorded.
async fn recorded_state_in(
    tx: &mut Transaction<'_, Any>,
    inbound: &Inbound,
) -> StoreResult<Option<InboundRecord>> {
    recorded_state(&mut **tx, inbound).await
}

/// [`recorded_state_in`] on any connection or pool.
async fn recorded_state<'c, E>(executor: E, inbound: &Inbound) -> StoreResult<Option<InboundRecord>>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let processed: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT processed_at FROM inbound_updates WHERE platform = $1 AND update_key = $2",
    )
    .bind(inbound.chat.platform.as_str())
    .bind(&inbound.update_key)
    .fetch_optional(executor)
    .await?;
    Ok(processed.map(|processed| match processed {
        Some(_) => InboundRecord::Duplicate,
        None => InboundRecord::Unfinished,
    }))
}

/// Marks the update handled and queues its replies; false (queuing
/// nothing) when it was handled before.
pub(super) async fn finish_inbound_in(
    tx: &mut Transaction<'_, Any>,
    inbound: &Inbound,
    replies: &[Outbound],
) -> StoreResult<bool> {
    let finished = mark_processed_in(tx, inbound).await?;
    if finished {
        queue_replies_in(tx, inbound, replies).await?;
    }
    Ok(finished)
}

/// Marks a recorded update handled; false when it was handled before or
/// was never recorded.
async fn mark_processed_in(tx: &mut Transaction<'_, Any>, inbound: &Inbound) -> StoreResult<bool> {
    let marked = sqlx::query(
        "UPDATE inbound_updates SET processed_at = $1
         WHERE platform = $2 AND update_key = $3 AND processed_at IS NULL",
    )
    .bind(now_ms())
    .bind(inbound.chat.platform.as_str())
    .bind(&inbound.update_key)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    Ok(marked)
}

async fn queue_replies_in(
    tx: &mut Transaction<'_, Any>,
    inbound: &Inbound,
    replies: &[Outbound],
) -> StoreResult<()> {
    for reply in replies {
        // A reply answers the update it is queued with, so a platform
        // fills only that update's pending response with it.
        let mut reply = reply.clone();
        reply
            .answers
            .get_or_insert_with(|| inbound.update_key.clone());
        enqueue_in(tx, &inbound.chat, None, &reply).await?;
    }
    Ok(())
}

pub(super) async fn enqueue_in(
    tx: &mut Transaction<'_, Any>,
    chat: &ChatRef,
    run_id: Option<RunId>,
    message: &Outbound,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (platform, chat_id, run_id, approval_id, approval_role, payload, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)",
    )
    .bind(chat.platform.as_str())
    .bind(&chat.chat_id)
    .bind(run_id.map(|r| r.to_string()))
    .bind(message.approval.map(|a| a.id.to_string()))
    .bind(message.approval.map(|a| match a.role {
        ApprovalRole::Offer => "offer",
        ApprovalRole::Closed => "closed",
    }))
    .bind(to_json(message)?)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    notify_outbox(tx, chat).await?;
    log_message(tx, chat, "out", "soloist", &message.text).await
}

/// PostgreSQL: tells every process's outbox (LISTEN) which chat has a row
/// to send, once the transaction commits; PostgreSQL folds repeats within
/// one transaction. SQLite has one process, woken in memory.
async fn notify_outbox(tx: &mut Transaction<'_, Any>, chat: &ChatRef) -> StoreResult<()> {
    if tx.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::OUTBOX_CHANNEL)
        .bind(format!("{}:{}", chat.platform.as_str(), chat.chat_id))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn log_message(
    tx: &mut Transaction<'_, Any>,
    chat: &ChatRef,
    direction: &str,
    user_id: &str,
    text: &str,
) -> StoreResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO messages (platform, chat_id, direction, user_id, text, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(chat.platform.as_str())
    .bind(&chat.chat_id)
    .bind(direction)
    .bind(user_id)
    .bind(text)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A chat's row says when it last wrote to the bot: only inbound updates
/// touch it. The bot's own messages leave it alone (a statement fewer on
/// every reply), so a chat only the bot has written to (a digest channel)
/// has no row.
async fn upsert_conversation_in(
    tx: &mut Transaction<'_, Any>,
    chat: &ChatRef,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO conversations (platform, chat_id, first_seen_at, last_seen_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (platform, chat_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
    )
    .bind(chat.platform.as_str())
    .bind(&chat.chat_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
