//! Memory's queries, for both databases. Full text is the one place the
//! dialects differ: SQLite's FTS5 table (rowid = chunk id, kept in step in
//! the same transaction) ranked by bm25, PostgreSQL's generated `tsvector`
//! column with a GIN index ranked by `ts_rank`.

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
    fn membership(self) -> &'static str {
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
        .fetch_optional(store.pool())
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
        .fetch_all(store.pool())
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
    tx.commit().await?;
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
    tx.commit().await?;
    Ok(Some(chunks))
}

/// Notes that an unchanged source was checked again.
pub async fn touch_source(store: &Store, id: &str) -> StoreResult<()> {
    sqlx::query("UPDATE memory_sources SET refreshed_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Full-text candidates for `terms` (plain words, already cleaned), best
/// first. Any term may match; ranking favours chunks matching more, rarer
/// terms, and matches in the section heading.
pub async fn search(
    store: &Store,
    terms: &[String],
    scope: Scope,
    limit: usize,
) -> StoreResult<Vec<RawHit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let columns = HIT_COLUMNS;
    let (sql, query) = match store.backend() {
        Backend::Sqlite => (
            format!(
                "SELECT {columns}, -f.score AS rank FROM (
                     SELECT rowid AS id, bm25(memory_fts, 3.0, 1.0) AS score FROM memory_fts
                     WHERE memory_fts MATCH $1 AND rowid {} ({DECISION_CHUNKS})
                     ORDER BY score LIMIT $2) f
                 JOIN memory_chunks c ON c.id = f.id
                 JOIN memory_sources s ON s.id = c.source_id
                 WHERE {} ORDER BY f.score LIMIT $2",
                scope.membership(),
                scope.condition()
            ),
            fts5_any(terms),
        ),
        // websearch_to_tsquery never fails on odd input; "or" between the
        // words asks for any of them (its default is all).
        Backend::Postgres => (
            format!(
                "SELECT {columns}, CAST(ts_rank(c.tsv, q, 1) AS DOUBLE PRECISION) AS rank
                 FROM memory_chunks c JOIN memory_sources s ON s.id = c.source_id,
                      websearch_to_tsquery('english', $1) q
                 WHERE c.tsv @@ q AND c.source_id {} (
                     SELECT id FROM memory_sources WHERE kind = 'decision') AND {}
                 ORDER BY rank DESC LIMIT $2",
                scope.membership(),
                scope.condition()
            ),
            terms.join(" or "),
        ),
    };
    let rows: Vec<HitRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(limit as i64)
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(raw_hit).collect())
}

/// The knowledge chunks that best match `terms`, ranked over at most
/// about `cap` matching chunks, so that a query of common words costs the
/// same at 100k chunks as at 1k.
///
/// The terms are taken rarest first while their match counts (counted up
/// to `cap`) add up to at most `cap`, the rarest always. Common words carry
/// little weight in bm25 and `ts_rank` alike, yet ranking every chunk they
/// match is what made a query slow. When the terms taken still match more
/// than `cap` chunks, the newest `cap` of them are ranked. Below `cap`
/// matches in all, this is the exact ranking over every term.
pub async fn search_knowledge(
    store: &Store,
    terms: &[String],
    limit: usize,
    cap: usize,
) -> StoreResult<Vec<RawHit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let cap = cap.max(1);
    let Taken {
        terms: taken,
        span,
        walk,
    } = terms_within(store, terms, cap).await?;
    let window = match span {
        Some(u64::MAX) => "ORDER BY c.id DESC LIMIT $3".to_string(),
        Some(span) => {
            // A literal range, and no ORDER BY … LIMIT: the planner then
            // ANDs the GIN bitmap with the key's range and visits only the
            // matches in it, where a LIMIT would walk the key backwards
            // testing every row.
            let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM memory_chunks")
                .fetch_one(store.pool())
                .await?;
            let from = newest.saturating_sub(i64::try_from(span).unwrap_or(i64::MAX));
            // Very common words: walking the key backwards finds `cap`
            // of them within a few `cap` rows, and ranks no more than that.
            if walk {
                format!("AND c.id > {from} ORDER BY c.id DESC LIMIT $3")
            } else {
                format!("AND c.id > {from} AND $3 > 0")
            }
        }
        None => "AND $3 > 0".to_string(),
    };
    let scope = Scope::Knowledge.condition();
    let (sql, query) = match store.backend() {
        // The window and the rank run on the full-text table alone; only
        // the best rows are joined. A decision's chunks are kept out by id
        // before ranking, so they cannot crowd the window.
        Backend::Sqlite => (
            format!(
                "SELECT {HIT_COLUMNS}, -f.score AS rank FROM (
                     SELECT rowid AS id, bm25(memory_fts, 3.0, 1.0) AS score FROM memory_fts
                     WHERE memory_fts MATCH $1 AND rowid NOT IN ({DECISION_CHUNKS})
                       AND rowid > COALESCE((
                           SELECT rowid FROM memory_fts WHERE memory_fts MATCH $1
                             AND rowid NOT IN ({DECISION_CHUNKS})
                           ORDER BY rowid DESC LIMIT 1 OFFSET $3), 0)
                     ORDER BY score LIMIT $2) f
                 JOIN memory_chunks c ON c.id = f.id
                 JOIN memory_sources s ON s.id = c.source_id
                 WHERE {scope} ORDER BY f.score LIMIT $2"
            ),
            fts5_any(&taken),
        ),
        Backend::Postgres => (
            // An ORDER BY id DESC LIMIT over sparse matches would walk the
            // whole primary key backwards looking for them (the planner's
            // guess): sparse matches are not windowed, and a dense window
            // reads a bounded id range.
            format!(
                "SELECT {HIT_COLUMNS}, CAST(ts_rank(c.tsv, q, 1) AS DOUBLE PRECISION) AS rank
                 FROM (SELECT c.id FROM memory_chunks c, websearch_to_tsquery('english', $1) q
                       WHERE c.tsv @@ q AND c.source_id NOT IN (
                           SELECT id FROM memory_sources WHERE kind = 'decision')
                       {window}) w
                 JOIN memory_chunks c ON c.id = w.id
                 JOIN memory_sources s ON s.id = c.source_id,
                 websearch_to_tsquery('english', $4) q
                 WHERE {scope} ORDER BY rank DESC LIMIT $2"
            ),
            taken.join(" or "),
        ),
    };
    // PostgreSQL ranks the window by every term ($4): `ts_rank` reads the
    // row's own vector. FTS5's bm25 would count every term's matches in
    // the whole index, the cost this avoids, so SQLite ranks by the terms
    // taken.
    let rows: Vec<HitRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(limit as i64)
        .bind(cap as i64)
        .bind(terms.join(" or "))
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(raw_hit).collect())
}

/// The ids of the decision log's chunks (few: one per decided draft).
const DECISION_CHUNKS: &str = "SELECT c.id FROM memory_chunks c
     JOIN memory_sources s ON s.id = c.source_id WHERE s.kind = 'decision'";

/// `terms` as an FTS5 query matching any of them, each quoted: raw text in
/// MATCH is a query language ("web-site" or "foo:" would be read as
/// operators or columns).
fn fts5_any(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The terms to rank by: the longest run of them, rarest first, whose
/// matches together stay within `cap` (the rarest always), in the query's
/// order.
///
/// SQLite counts in the full-text index, each count stopping at `cap + 1`:
/// each term alone, then each rarest-first run of them. PostgreSQL reads
/// the estimate `ANALYZE` keeps for the `tsv` column (its most common
/// lexemes and their frequencies; counting would read a row per match) and
/// takes the terms as independent. A lexeme missing from a short list
/// does not occur and counts 0; so does every term before the
/// first `ANALYZE` (autovacuum runs it as the table grows), which leaves
/// the newest-matches window alone to bound the ranking. When the list is
/// full (1,000 words or more: it was cut), an unlisted word may be as
/// common as the least listed one, and counts that much.
async fn terms_within(store: &Store, terms: &[String], cap: usize) -> StoreResult<Taken> {
    let limit = cap as u64;
    let taken = match store.backend() {
        Backend::Sqlite => {
            let alone: Vec<String> = terms
                .iter()
                .map(|t| fts5_any(std::slice::from_ref(t)))
                .collect();
            let counts = sqlite_counts(store, &alone, cap).await?;
            let order = rarest_first(&counts);
            let rarest = order.first().map_or(0, |&i| counts[i]);
            let taken = if counts.iter().sum::<u64>() <= limit {
                order.len()
            } else if rarest > limit {
                1
            } else {
                let runs: Vec<String> = (1..=order.len())
                    .map(|n| {
                        let run: Vec<String> =
                            order[..n].iter().map(|&i| terms[i].clone()).collect();
                        fts5_any(&run)
                    })
                    .collect();
                longest_within(&sqlite_counts(store, &runs, cap).await?, limit)
            };
            pick(terms, &order[..taken])
        }
        Backend::Postgres => {
            let (frequencies, rows) = postgres_frequencies(store, terms).await?;
            let order = rarest_first(
                &frequencies
                    .iter()
                    .map(|f| (f * 1e9) as u64)
                    .collect::<Vec<_>>(),
            );
            let mut missed = 1.0;
            let unions: Vec<u64> = order
                .iter()
                .map(|&i| {
                    missed *= 1.0 - frequencies[i].clamp(0.0, 1.0);
                    (rows * (1.0 - missed)).round() as u64
                })
                .collect();
            let n = longest_within(&unions, limit);
            let matches = unions.get(n - 1).copied().unwrap_or(0);
            // Dense matches: the newest ones sit among the newest ids, so
            // the window reads a range of ids about cap / density long
            // (half again, for the estimate's error). Sparse ones: the GIN
            // index finds them all, and they are few.
            let span = if rows < 1.0 {
                // No statistics yet: nothing is known, so the newest
                // `cap` matches, however far back they are.
                Some(u64::MAX)
            } else if matches > limit {
                let density = matches as f64 / rows;
                Some((limit as f64 / density * 1.5).ceil() as u64)
            } else {
                None
            };
            return Ok(Taken {
                terms: pick(terms, &order[..n]),
                span,
                walk: matches as f64 >= rows * WALK_DENSITY,
            });
        }
    };
    Ok(Taken {
        terms: taken,
        span: None,
        walk: false,
    })
}

/// Matches at least this dense are windowed by walking the newest ids
/// (measured: at 73% it beats ranking the range; at 1–5% it loses).
const WALK_DENSITY: f64 = 0.2;

/// The terms full text ranks by, and on PostgreSQL, when their matches
/// are dense, how many of the newest chunk ids the window reads (`u64::MAX`:
/// no statistics yet, the newest `cap` matches wherever they are).
struct Taken {
    terms: Vec<String>,
    span: Option<u64>,
    /// Dense enough to walk the newest ids with ORDER BY … LIMIT.
    walk: bool,
}

/// How many chunks each FTS5 expression matches, each count stopping at
/// `cap + 1`; one statement.
async fn sqlite_counts(store: &Store, expressions: &[String], cap: usize) -> StoreResult<Vec<u64>> {
    let sql = (0..expressions.len())
        .map(|i| {
            format!(
                "SELECT {i}, (SELECT count(*) FROM (SELECT 1 FROM memory_fts
                 WHERE memory_fts MATCH ${} LIMIT ${}))",
                i + 1,
                expressions.len() + 1
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for expression in expressions {
        query = query.bind(expression.clone());
    }
    let rows: Vec<(i64, i64)> = query.bind(cap as i64 + 1).fetch_all(store.pool()).await?;
    let mut counts = vec![0u64; expressions.len()];
    for (i, count) in rows {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
            *slot = count.max(0) as u64;
        }
    }
    Ok(counts)
}

/// Each term's share of chunks by PostgreSQL's statistics, and the row
/// estimate. The statistics (up to 10,000 words) are read once per
/// database and kept for `FREQUENCIES_KEPT` (they change only when
/// `ANALYZE` runs; reading them costs tens of milliseconds); a term's
/// lexeme (PostgreSQL's stemming) is asked once and kept.
async fn postgres_frequencies(store: &Store, terms: &[String]) -> StoreResult<(Vec<f64>, f64)> {
    let database = store.identity();
    let now = std::time::Instant::now();
    let (fresh, unknown) = {
        let kept = FREQUENCIES.lock().unwrap_or_else(|e| e.into_inner());
        match kept.iter().find(|k| k.database == database) {
            Some(known) => (
                now.duration_since(known.read_at) < FREQUENCIES_KEPT,
                terms
                    .iter()
                    .filter(|t| !known.lexemes.contains_key(*t))
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            None => (false, terms.to_vec()),
        }
    };
    let statistics = if fresh {
        None
    } else {
        Some(read_statistics(store).await?)
    };
    let lexemes = if unknown.is_empty() {
        Vec::new()
    } else {
        lexemes_of(store, &unknown).await?
    };
    let mut kept = FREQUENCIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((by_lexeme, unlisted, rows)) = statistics {
        let lexemes = kept
            .iter()
            .position(|k| k.database == database)
            .map(|i| kept.remove(i).lexemes)
            .unwrap_or_default();
        if kept.len() >= 4 {
            kept.remove(0);
        }
        kept.push(KnownFrequencies {
            database: database.clone(),
            read_at: now,
            rows,
            unlisted,
            by_lexeme,
            lexemes,
        });
    }
    let Some(known) = kept.iter_mut().find(|k| k.database == database) else {
        return Ok((vec![0.0; terms.len()], 0.0));
    };
    if known.lexemes.len() > 50_000 {
        known.lexemes.clear();
    }
    known.lexemes.extend(unknown.into_iter().zip(lexemes));
    let frequencies = terms
        .iter()
        .map(|t| match known.lexemes.get(t) {
            Some(Some(lexeme)) => known
                .by_lexeme
                .get(lexeme)
                .copied()
                .unwrap_or(known.unlisted),
            // A stop word: PostgreSQL leaves it out of the query.
            _ => 0.0,
        })
        .collect();
    Ok((frequencies, known.rows))
}

/// What `pg_stats` says of the `tsv` column, for one database, and the
/// lexemes of the terms asked so far.
struct KnownFrequencies {
    database: String,
    read_at: std::time::Instant,
    rows: f64,
    /// The share of chunks an unlisted word is taken to be in: 0 when the
    /// list is short (every word was listed), else the least listed share.
    unlisted: f64,
    by_lexeme: std::collections::HashMap<String, f64>,
    lexemes: std::collections::HashMap<String, Option<String>>,
}

static FREQUENCIES: std::sync::Mutex<Vec<KnownFrequencies>> = std::sync::Mutex::new(Vec::new());
const FREQUENCIES_KEPT: std::time::Duration = std::time::Duration::from_secs(300);

/// The listed lexemes with their shares, the share of an unlisted one,
/// and the row estimate (0 before the first `ANALYZE`).
async fn read_statistics(
    store: &Store,
) -> StoreResult<(std::collections::HashMap<String, f64>, f64, f64)> {
    let listed: Vec<(String, f64)> = sqlx::query_as(
        "SELECT x.lexeme, CAST(x.share AS DOUBLE PRECISION)
         FROM pg_stats,
              unnest(CAST(CAST(most_common_elems AS TEXT) AS TEXT[]), most_common_elem_freqs)
                  AS x(lexeme, share)
         WHERE schemaname = current_schema() AND tablename = 'memory_chunks'
           AND attname = 'tsv' AND x.lexeme IS NOT NULL",
    )
    .fetch_all(store.pool())
    .await?;
    let rows: f64 = sqlx::query_scalar(
        "SELECT CAST(GREATEST(reltuples, 0) AS DOUBLE PRECISION) FROM pg_class
         WHERE oid = CAST('memory_chunks' AS regclass)",
    )
    .fetch_one(store.pool())
    .await?;
    // A full list was cut: ANALYZE keeps ten times the statistics target
    // (migration 0019), and a list of 1,000 or more was cut at some share.
    let unlisted = if listed.len() >= 1000 {
        listed.iter().map(|(_, f)| *f).fold(f64::MAX, f64::min)
    } else {
        0.0
    };
    Ok((listed.into_iter().collect(), unlisted, rows))
}

/// Each term's lexeme under the 'english' configuration (None: a stop
/// word), in order.
async fn lexemes_of(store: &Store, terms: &[String]) -> StoreResult<Vec<Option<String>>> {
    // Terms are letters and digits only (retrieve::terms), so a space
    // separates them safely.
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT CAST(t.i AS BIGINT) - 1, MIN(l.lexeme)
         FROM unnest(string_to_array($1, ' ')) WITH ORDINALITY AS t(term, i)
         LEFT JOIN LATERAL unnest(tsvector_to_array(to_tsvector('english', t.term)))
              AS l(lexeme) ON TRUE
         GROUP BY t.i",
    )
    .bind(terms.join(" "))
    .fetch_all(store.pool())
    .await?;
    let mut lexemes = vec![None; terms.len()];
    for (i, lexeme) in rows {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| lexemes.get_mut(i)) {
            *slot = lexeme;
        }
    }
    Ok(lexemes)
}

/// Positions of `counts`, smallest first (ties in the query's order).
pub(super) fn rarest_first(counts: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| counts[i]);
    order
}

/// How many of the runs (sizes of the first 1, 2, … terms together) to
/// take: the most whose size stays within `cap`, at least one.
pub(super) fn longest_within(runs: &[u64], cap: u64) -> usize {
    runs.iter()
        .take_while(|&&size| size <= cap)
        .count()
        .max(1)
        .min(runs.len())
}

/// The terms at `positions`, in the query's order.
fn pick(terms: &[String], positions: &[usize]) -> Vec<String> {
    let mut positions = positions.to_vec();
    positions.sort_unstable();
    positions.into_iter().map(|i| terms[i].clone()).collect()
}

type HitRow = (
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

const HIT_COLUMNS: &str =
    "c.id, s.name, s.kind, s.title, s.url, c.section, c.text, s.weight, s.meta, s.refreshed_at";

/// The chunks with these ids that still exist in `scope`, rank 0, in no
/// particular order (the vector side's candidates, read back).
pub async fn chunks_by_ids(store: &Store, ids: &[i64], scope: Scope) -> StoreResult<Vec<RawHit>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The ids are integers from the index, never text from outside.
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {HIT_COLUMNS}, CAST(0 AS DOUBLE PRECISION) FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         WHERE c.id IN ({list}) AND {}",
        scope.condition()
    );
    let rows: Vec<HitRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(raw_hit).collect())
}

fn raw_hit(r: HitRow) -> RawHit {
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
    tx.commit().await?;
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
    .fetch_optional(store.pool())
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
    .fetch_all(store.pool())
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
    tx.commit().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_ordered_rarest_first_and_runs_taken_while_within_the_cap() {
        assert_eq!(rarest_first(&[900, 40, 700, 3]), [3, 1, 2, 0]);
        assert_eq!(
            rarest_first(&[5, 5, 1]),
            [2, 0, 1],
            "ties keep the query's order"
        );
        // Runs of 3, 43, 743, 1001 matches under a cap of 500: two.
        assert_eq!(longest_within(&[3, 43, 743, 1001], 500), 2);
        assert_eq!(longest_within(&[3, 43, 70], 500), 3);
        assert_eq!(longest_within(&[900, 1001], 500), 1, "the rarest always");
        let terms: Vec<String> = ["price", "sprint", "brand", "trilho"]
            .map(String::from)
            .into();
        assert_eq!(
            pick(&terms, &[3, 1]),
            ["sprint", "trilho"],
            "the query's order"
        );
    }
}
