//! Memory's queries, for both databases: sources and chunks, working
//! memory, the chat window, erasure. Full-text search, where the dialects
//! differ, is in `fulltext.rs`.

use sqlx::{Any, Transaction};

use super::chunk::Chunk;
use crate::store::{Backend, Store, StoreResult, now_ms};

/// A source as stored, with how many chunks it has.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub title: String,
    pub url: String,
    pub origin: String,
    pub content_hash: String,
    pub weight: f64,
    pub meta: String,
    pub ingested_at: i64,
    pub refreshed_at: i64,
    pub chunks: i64,
}

/// What a source is stored as.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: String,
    pub kind: &'static str,
    pub title: String,
    pub url: String,
    pub origin: String,
    pub content_hash: String,
    pub weight: f64,
    pub meta: String,
}

/// A full-text hit before scoring: the chunk, its source, the raw rank.
#[derive(Debug, Clone)]
pub struct RawHit {
    pub chunk_id: i64,
    pub source: String,
    pub kind: String,
    pub title: String,
    pub url: String,
    pub section: String,
    pub text: String,
    pub weight: f64,
    pub meta: String,
    pub refreshed_at: i64,
    /// Higher is better (bm25 negated on SQLite, ts_rank on PostgreSQL).
    pub rank: f64,
}

/// Which sources a search looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Files, pages and notes.
    Knowledge,
    /// Approved and rejected drafts.
    Decisions,
}

impl Scope {
    pub(super) fn condition(self) -> &'static str {
        match self {
            Scope::Knowledge => "s.kind <> 'decision'",
            Scope::Decisions => "s.kind = 'decision'",
        }
    }

    /// How a chunk id relates to the decision log's ids: filtering by id
    /// before ranking keeps the scope from ranking the other's matches
    /// (the decision log is small; the knowledge may hold 100k chunks).
    pub(super) fn membership(self) -> &'static str {
        match self {
            Scope::Knowledge => "NOT IN",
            Scope::Decisions => "IN",
        }
    }
}

const SOURCE_COLUMNS: &str = "s.id, s.name, s.kind, s.title, s.url, s.origin, s.content_hash, s.weight, s.meta, s.ingested_at, s.refreshed_at";

type SourceTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    f64,
    String,
    i64,
    i64,
    i64,
);

fn source_row(t: SourceTuple) -> SourceRow {
    SourceRow {
        id: t.0,
        name: t.1,
        kind: t.2,
        title: t.3,
        url: t.4,
        origin: t.5,
        content_hash: t.6,
        weight: t.7,
        meta: t.8,
        ingested_at: t.9,
        refreshed_at: t.10,
        chunks: t.11,
    }
}

pub async fn source(store: &Store, name: &str) -> StoreResult<Option<SourceRow>> {
    let sql = format!(
        "SELECT {SOURCE_COLUMNS}, (SELECT COUNT(*) FROM memory_chunks c WHERE c.source_id = s.id)
         FROM memory_sources s WHERE s.name = $1"
    );
    let row: Option<SourceTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(store.reads())
        .await?;
    Ok(row.map(source_row))
}

/// Every source but decisions, by name.
pub async fn sources(store: &Store) -> StoreResult<Vec<SourceRow>> {
    let sql = format!(
        "SELECT {SOURCE_COLUMNS}, (SELECT COUNT(*) FROM memory_chunks c WHERE c.source_id = s.id)
         FROM memory_sources s WHERE s.kind <> 'decision' ORDER BY s.name"
    );
    let rows: Vec<SourceTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.reads())
        .await?;
    Ok(rows.into_iter().map(source_row).collect())
}

/// Stores `source` with `chunks`, replacing any source of the same name and
/// its chunks, in one transaction. The first ingestion time is kept.
pub async fn replace_source(
    store: &Store,
    source: &NewSource,
    chunks: &[Chunk],
) -> StoreResult<()> {
    let now = now_ms();
    let mut tx = store.pool().begin().await?;
    let old: Option<(String, i64)> =
        sqlx::query_as("SELECT id, ingested_at FROM memory_sources WHERE name = $1")
            .bind(&source.name)
            .fetch_optional(&mut *tx)
            .await?;
    let ingested_at = match &old {
        Some((id, ingested_at)) => {
            delete_source_in(&mut tx, store.backend(), id).await?;
            *ingested_at
        }
        None => now,
    };
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO memory_sources (id, name, kind, title, url, origin, content_hash, weight, meta, ingested_at, refreshed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&source.name)
    .bind(source.kind)
    .bind(&source.title)
    .bind(&source.url)
    .bind(&source.origin)
    .bind(&source.content_hash)
    .bind(source.weight)
    .bind(&source.meta)
    .bind(ingested_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for (seq, chunk) in chunks.iter().enumerate() {
        insert_chunk(&mut tx, store.backend(), &id, seq as i64, chunk, now).await?;
    }
    store.commit_durably(tx).await?;
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    source_id: &str,
    seq: i64,
    chunk: &Chunk,
    now: i64,
) -> StoreResult<()> {
    let chunk_id: i64 = sqlx::query_scalar(
        "INSERT INTO memory_chunks (source_id, seq, section, text, content_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(source_id)
    .bind(seq)
    .bind(&chunk.section)
    .bind(&chunk.text)
    .bind(super::content_hash(&chunk.text))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    if backend == Backend::Sqlite {
        sqlx::query("INSERT INTO memory_fts (rowid, section, text) VALUES ($1, $2, $3)")
            .bind(chunk_id)
            .bind(&chunk.section)
            .bind(&chunk.text)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Removes a source's full-text rows, chunks and row; returns its chunks.
async fn delete_source_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    id: &str,
) -> StoreResult<u64> {
    if backend == Backend::Sqlite {
        sqlx::query(
            "DELETE FROM memory_fts WHERE rowid IN (SELECT id FROM memory_chunks WHERE source_id = $1)",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    let chunks = sqlx::query("DELETE FROM memory_chunks WHERE source_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM memory_sources WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(chunks)
}

/// Deletes the source called `name`; returns its chunk count, or None when
/// there is no such source.
pub async fn delete_source(store: &Store, name: &str) -> StoreResult<Option<u64>> {
    let mut tx = store.pool().begin().await?;
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM memory_sources WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    let chunks = delete_source_in(&mut tx, store.backend(), &id).await?;
    store.commit_durably(tx).await?;
    Ok(Some(chunks))
}

/// Notes that an unchanged source was checked again.
pub async fn touch_source(store: &Store, id: &str) -> StoreResult<()> {
    sqlx::query("UPDATE memory_sources SET refreshed_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(store.pool())
        .await?;
    store.durable().await?;
    Ok(())
}

pub(super) type HitRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    f64,
    String,
    i64,
    f64,
);

pub(super) const HIT_COLUMNS: &str =
    "c.id, s.name, s.kind, s.title, s.url, c.section, c.text, s.weight, s.meta, s.refreshed_at";

/// The chunks with these ids that still exist in `scope`, rank 0, in no
/// particular order (the vector side's candidates, read back).
pub async fn chunks_by_ids(store: &Store, ids: &[i64], scope: Scope) -> StoreResult<Vec<RawHit>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One statement whatever the ids: a list written into the SQL would
    // be prepared anew for every query (half a millisecond on SQLite).
    let ids_in = store.backend().json_integers("$1");
    let sql = format!(
        "SELECT {HIT_COLUMNS}, CAST(0 AS DOUBLE PRECISION) FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         WHERE c.id IN ({ids_in}) AND {}",
        scope.condition()
    );
    let rows: Vec<HitRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .fetch_all(store.reads())
        .await?;
    Ok(rows.into_iter().map(raw_hit).collect())
}

pub(super) fn raw_hit(r: HitRow) -> RawHit {
    RawHit {
        chunk_id: r.0,
        source: r.1,
        kind: r.2,
        title: r.3,
        url: r.4,
        section: r.5,
        text: r.6,
        weight: r.7,
        meta: r.8,
        refreshed_at: r.9,
        rank: r.10,
    }
}

/// An approved or rejected draft not yet in the decision index.
#[derive(Debug, Clone)]
pub struct UnindexedDecision {
    pub artifact_id: String,
    pub status: String,
    pub content: String,
    pub reason: String,
    pub run_id: String,
    pub flow: String,
    pub input: String,
}

/// Decisions (artifacts) that have no decision source yet.
pub async fn unindexed_decisions(store: &Store) -> StoreResult<Vec<UnindexedDecision>> {
    type Row = (String, String, String, String, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.status, a.content, COALESCE(a.note, ''), r.id, r.flow, r.input
         FROM artifacts a JOIN runs r ON r.id = a.run_id
         WHERE a.status IN ('approved', 'rejected')
           AND NOT EXISTS (SELECT 1 FROM memory_sources s WHERE s.name = 'decision:' || a.id)
         ORDER BY a.created_at",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UnindexedDecision {
            artifact_id: r.0,
            status: r.1,
            content: r.2,
            reason: r.3,
            run_id: r.4,
            flow: r.5,
            input: r.6,
        })
        .collect())
}

/// Keeps `value` for the run under `key` until `expires_at`.
pub async fn put_working(
    store: &Store,
    run_id: &str,
    key: &str,
    value: &str,
    expires_at: i64,
) -> StoreResult<()> {
    let now = now_ms();
    let mut tx = store.pool().begin().await?;
    sqlx::query("DELETE FROM working_memory WHERE run_id = $1 AND key = $2")
        .bind(run_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO working_memory (run_id, key, value, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run_id)
    .bind(key)
    .bind(value)
    .bind(expires_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    store.commit_durably(tx).await?;
    Ok(())
}

/// The run's value under `key`, unless it has expired.
pub async fn get_working(store: &Store, run_id: &str, key: &str) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM working_memory WHERE run_id = $1 AND key = $2 AND expires_at > $3",
    )
    .bind(run_id)
    .bind(key)
    .bind(now_ms())
    .fetch_optional(store.reads())
    .await?)
}

/// Deletes every item expired at `now`; returns how many.
pub async fn purge_working(store: &Store, now: i64) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM working_memory WHERE expires_at <= $1")
            .bind(now)
            .execute(store.pool())
            .await?
            .rows_affected(),
    )
}

/// The chat's most recent messages, newest first: (direction, user, text).
pub async fn recent_messages(
    store: &Store,
    platform: &str,
    chat_id: &str,
    limit: i64,
) -> StoreResult<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT direction, user_id, text FROM messages
         WHERE platform = $1 AND chat_id = $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(platform)
    .bind(chat_id)
    .bind(limit)
    .fetch_all(store.reads())
    .await?)
}

/// How many rows an erasure removed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub knowledge_chunks: u64,
    pub decisions: u64,
    pub messages: u64,
    /// Run journal events, run requests and approval drafts rewritten
    /// with the mention replaced (a run's history stays whole).
    pub journal_rows: u64,
    /// Delivered or failed outbox rows rewritten the same way.
    pub outbox_rows: u64,
}

/// What a mention is replaced by in rewritten records.
pub const ERASED: &str = "[erased]";

/// `text` with every case-insensitive occurrence of `who` (already lower
/// case) replaced by [`ERASED`].
fn scrub(text: &str, who: &str) -> String {
    if who.is_empty() {
        return text.to_string();
    }
    let lower = text.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then the
    // positions do not line up and the text is replaced whole.
    if lower.len() != text.len() {
        return if lower.contains(who) {
            ERASED.to_string()
        } else {
            text.to_string()
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(who) {
        if at < rest {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(ERASED);
        rest = at + who.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// A stored JSON text with the mention scrubbed from every string in it
/// (keys included), still valid JSON; a text that is not JSON is scrubbed
/// as text.
fn scrub_json(stored: &str, who: &str) -> String {
    fn walk(value: &mut serde_json::Value, who: &str) {
        match value {
            serde_json::Value::String(s) => *s = scrub(s, who),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, who)),
            serde_json::Value::Object(map) => {
                let entries: Vec<(String, serde_json::Value)> = std::mem::take(map)
                    .into_iter()
                    .map(|(k, mut v)| {
                        walk(&mut v, who);
                        (scrub(&k, who), v)
                    })
                    .collect();
                map.extend(entries);
            }
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(stored) {
        Ok(mut value) => {
            walk(&mut value, who);
            value.to_string()
        }
        Err(_) => scrub(stored, who),
    }
}

/// Deletes every knowledge chunk, saved draft (with its decision-log index
/// entry) and logged chat message that mentions `who` (case-insensitive),
/// in one transaction. A draft goes when its text, its rejection reason or
/// its run's request mentions them.
pub async fn erase_mentions(store: &Store, who: &str) -> StoreResult<Erased> {
    let escaped = who
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let pattern = format!("%{escaped}%");
    let backend = store.backend();
    let mut tx = store.pool().begin().await?;
    let decisions = sqlx::query(
        "DELETE FROM artifacts WHERE LOWER(content) LIKE $1 ESCAPE '\\'
            OR LOWER(COALESCE(note, '')) LIKE $1 ESCAPE '\\'
            OR run_id IN (SELECT id FROM runs WHERE LOWER(input) LIKE $1 ESCAPE '\\')",
    )
    .bind(&pattern)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Index entries of drafts that are gone, or that mention them.
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT s.id FROM memory_sources s WHERE s.kind = 'decision'
           AND (LOWER(s.meta) LIKE $1 ESCAPE '\\' OR LOWER(s.title) LIKE $1 ESCAPE '\\'
                OR NOT EXISTS (SELECT 1 FROM artifacts a WHERE 'decision:' || a.id = s.name))",
    )
    .bind(&pattern)
    .fetch_all(&mut *tx)
    .await?;
    for id in &stale {
        delete_source_in(&mut tx, backend, id).await?;
    }
    let chunks: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM memory_chunks WHERE LOWER(text) LIKE $1 ESCAPE '\\'")
            .bind(&pattern)
            .fetch_all(&mut *tx)
            .await?;
    for id in &chunks {
        if backend == Backend::Sqlite {
            sqlx::query("DELETE FROM memory_fts WHERE rowid = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM memory_chunks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let messages = sqlx::query(
        "DELETE FROM messages WHERE LOWER(text) LIKE $1 ESCAPE '\\' OR LOWER(user_id) = $2",
    )
    .bind(&pattern)
    .bind(who.to_lowercase())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let lower = who.to_lowercase();
    let mut journal_rows = 0;
    for (table, key, column) in [
        (
            "journal",
            "CAST(run_id AS TEXT) || ':' || CAST(seq AS TEXT)",
            "payload",
        ),
        ("runs", "id", "input"),
        ("approvals", "id", "draft"),
    ] {
        journal_rows += rewrite(&mut tx, table, key, column, "", &pattern, &lower).await?;
    }
    // Rows still to be sent are left alone: what the operator was promised
    // goes out; what was already said is not kept in full.
    let outbox_rows = rewrite(
        &mut tx,
        "outbox",
        "CAST(id AS TEXT)",
        "payload",
        "AND status <> 'pending'",
        &pattern,
        &lower,
    )
    .await?;
    store.commit_durably(tx).await?;
    Ok(Erased {
        knowledge_chunks: chunks.len() as u64,
        decisions,
        messages,
        journal_rows,
        outbox_rows,
    })
}

/// Rewrites `column` of the rows of `table` that mention the person (the
/// LIKE `pattern`), scrubbing `who` out of its JSON; returns how many.
/// Table and column names are constants of this file.
async fn rewrite(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    key: &str,
    column: &str,
    also: &str,
    pattern: &str,
    who: &str,
) -> StoreResult<u64> {
    let select = format!(
        "SELECT {key}, {column} FROM {table} WHERE LOWER({column}) LIKE $1 ESCAPE '\\' {also}"
    );
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(select))
        .bind(pattern)
        .fetch_all(&mut **tx)
        .await?;
    let update = format!("UPDATE {table} SET {column} = $1 WHERE {key} = $2");
    for (id, stored) in &rows {
        sqlx::query(sqlx::AssertSqlSafe(update.clone()))
            .bind(scrub_json(stored, who))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(rows.len() as u64)
}
