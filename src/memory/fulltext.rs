//! Full-text search, the one place the dialects differ: SQLite's FTS5
//! table (rowid = chunk id, kept in step in the same transaction) ranked
//! by bm25, PostgreSQL's generated `tsvector` column with a GIN index
//! ranked by `ts_rank`. The knowledge search ranks a bounded set of
//! matches (`search_knowledge`), so a query costs about the same at 100k
//! chunks as at 1k.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use moka::future::Cache;

use super::db::{HIT_COLUMNS, HitRow, RawHit, Scope, raw_hit};
use crate::store::{Backend, Store, StoreResult};

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
        .fetch_all(store.reads())
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
        counts,
        span,
        walk,
    } = terms_within(store, terms, cap).await?;
    // Walking the newest ids must stay a walk: the planner cannot guess
    // how many rows a bound tsquery matches (it assumes few), and with a
    // cheap GIN index it reads every match of a word in 73% of the chunks
    // (4.8 ms at 100k) to AND it with the id range. `IS TRUE` keeps the
    // match a filter on the walk.
    let matches = if walk && span != Some(u64::MAX) {
        "(c.tsv @@ q) IS TRUE"
    } else {
        "c.tsv @@ q"
    };
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
                     SELECT rowid AS id, soloist_bm25(memory_fts, 3.0, 1.0, $4) AS score
                     FROM memory_fts
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
            // The window's rows are ranked from the vector they were
            // read with, and only the best `limit` are read again for their
            // text and source: reading every ranked row twice cost more
            // than the ranking.
            format!(
                "SELECT {HIT_COLUMNS}, r.rank FROM (
                     SELECT w.id, CAST(ts_rank(w.tsv, q, 1) AS DOUBLE PRECISION) AS rank
                     FROM (SELECT c.id, c.tsv FROM memory_chunks c,
                                  websearch_to_tsquery('english', $1) q
                           WHERE {matches} AND c.source_id NOT IN (
                               SELECT id FROM memory_sources WHERE kind = 'decision')
                           {window}) w,
                          websearch_to_tsquery('english', $4) q
                     ORDER BY rank DESC, w.id DESC LIMIT $2) r
                 JOIN memory_chunks c ON c.id = r.id
                 JOIN memory_sources s ON s.id = c.source_id
                 WHERE {scope} ORDER BY r.rank DESC, r.id DESC"
            ),
            taken.join(" or "),
        ),
    };
    // PostgreSQL ranks the window by every term ($4): `ts_rank` reads the
    // row's own vector. FTS5's bm25 would count every term's matches in
    // the whole index, the cost this avoids, so SQLite ranks by the terms
    // taken, with the match counts already known ($4, `soloist_bm25`).
    let fourth = match store.backend() {
        Backend::Sqlite => counts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        Backend::Postgres => terms.join(" or "),
    };
    let rows: Vec<HitRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(limit as i64)
        .bind(cap as i64)
        .bind(fourth)
        .fetch_all(store.reads())
        .await?;
    Ok(rows.into_iter().map(raw_hit).collect())
}

/// Merges SQLite's full-text index into one segment. FTS5 writes a segment
/// per transaction and merges them only in part as it goes, so after an
/// ingest of many sources a query reads a word's matches from a dozen or
/// more segments. Measured at 100k chunks: the merge takes about half a
/// second, and full-text retrieval's median went from 2.2 to 1.6 ms. It
/// rewrites the whole index, so it is for the end of a batch, not for
/// every note. PostgreSQL's GIN index has nothing to merge (migration 0020
/// turned off its pending list).
pub async fn compact(store: &Store) -> StoreResult<()> {
    if store.backend() == Backend::Sqlite {
        sqlx::query("INSERT INTO memory_fts(memory_fts) VALUES('optimize')")
            .execute(store.pool())
            .await?;
        store.durable().await?;
    }
    Ok(())
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
            let counts = sqlite_term_counts(store, terms, cap).await?;
            let order = rarest_first(&counts);
            let rarest = order.first().map_or(0, |&i| counts[i]);
            let taken = if counts.iter().sum::<u64>() <= limit {
                order.len()
            } else if rarest > limit {
                1
            } else {
                let sorted: Vec<u64> = order.iter().map(|&i| counts[i]).collect();
                let (surely, possibly) = runs_in_doubt(&sorted, limit);
                let runs: Vec<String> = (surely + 1..=possibly)
                    .map(|n| {
                        let run: Vec<String> =
                            order[..n].iter().map(|&i| terms[i].clone()).collect();
                        fts5_any(&run)
                    })
                    .collect();
                if runs.is_empty() {
                    surely
                } else {
                    let counted = sqlite_counts(store, &runs, cap).await?;
                    surely + counted.iter().take_while(|&&c| c <= limit).count()
                }
            };
            let mut positions = order[..taken].to_vec();
            positions.sort_unstable();
            let taken_counts = positions.iter().map(|&i| counts[i]).collect();
            (pick(terms, &positions), taken_counts)
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
            // the window reads a range of ids cap / density long: about
            // `cap` matches, as many more or fewer as the estimate is off
            // (reading half again as many, to be sure of `cap`, cost a
            // third more time for no better ranking). Sparse ones: the GIN
            // index finds them all, and they are few.
            let span = if rows < 1.0 {
                // No statistics yet: nothing is known, so the newest
                // `cap` matches, however far back they are.
                Some(u64::MAX)
            } else if matches > limit {
                let density = matches as f64 / rows;
                let span = limit as f64 / density;
                // Reading the key's range costs about a fiftieth of a
                // match's ranking per id: over half the table, ranking
                // every match (at most twice `cap`) is cheaper.
                (span < rows * WHOLE_TABLE_SHARE).then(|| span.ceil() as u64)
            } else {
                None
            };
            return Ok(Taken {
                terms: pick(terms, &order[..n]),
                counts: Vec::new(),
                span,
                walk: matches as f64 >= rows * WALK_DENSITY,
            });
        }
    };
    let (terms, counts) = taken;
    Ok(Taken {
        terms,
        counts,
        span: None,
        walk: false,
    })
}

/// A window over at least this share of the chunks is no window.
const WHOLE_TABLE_SHARE: f64 = 0.5;

/// Matches at least this dense are windowed by walking the newest ids
/// (measured: at 73% it beats ranking the range; at 1–5% it loses).
const WALK_DENSITY: f64 = 0.2;

/// The terms full text ranks by, and on PostgreSQL, when their matches
/// are dense, how many of the newest chunk ids the window reads (`u64::MAX`:
/// no statistics yet, the newest `cap` matches wherever they are).
struct Taken {
    terms: Vec<String>,
    /// SQLite: each taken term's match count (up to `cap + 1`), in the
    /// terms' order, for `soloist_bm25`.
    counts: Vec<u64>,
    span: Option<u64>,
    /// Dense enough to walk the newest ids with ORDER BY … LIMIT.
    walk: bool,
}

/// How many chunks each term matches (up to `cap + 1`), counted once and
/// kept for `STATISTICS_KEPT`, as PostgreSQL's statistics are: counting a
/// common word reads its whole posting list, most of a query's time. A
/// count kept while chunks came or went only steers which terms are
/// ranked by; the search itself reads the index as it is.
async fn sqlite_term_counts(store: &Store, terms: &[String], cap: usize) -> StoreResult<Vec<u64>> {
    let database = store.identity();
    let key = |term: &String| (database.clone(), cap, term.clone());
    kept_or_asked(&TERM_COUNTS, terms, key, |unknown| async move {
        let alone: Vec<String> = unknown
            .iter()
            .map(|t| fts5_any(std::slice::from_ref(t)))
            .collect();
        sqlite_counts(store, &alone, cap).await
    })
    .await
}

/// Each term's value kept in `cache`; the terms not kept are asked of
/// `ask` at once (in their order) and its answers kept.
async fn kept_or_asked<K, V, Fut>(
    cache: &Cache<K, V>,
    terms: &[String],
    key: impl Fn(&String) -> K,
    ask: impl FnOnce(Vec<String>) -> Fut,
) -> StoreResult<Vec<V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Default + Send + Sync + 'static,
    Fut: std::future::Future<Output = StoreResult<Vec<V>>>,
{
    let mut values = Vec::with_capacity(terms.len());
    let mut unknown = Vec::new();
    for term in terms {
        let kept = cache.get(&key(term)).await;
        if kept.is_none() {
            unknown.push(term.clone());
        }
        values.push(kept);
    }
    if unknown.is_empty() {
        return Ok(values.into_iter().map(Option::unwrap_or_default).collect());
    }
    let asked = ask(unknown.clone()).await?;
    for (term, value) in unknown.iter().zip(&asked) {
        cache.insert(key(term), value.clone()).await;
    }
    let mut asked = asked.into_iter();
    Ok(values
        .into_iter()
        .map(|kept| kept.or_else(|| asked.next()).unwrap_or_default())
        .collect())
}

/// By database, cap and term.
static TERM_COUNTS: LazyLock<Cache<(String, usize, String), u64>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(50_000)
        .time_to_live(STATISTICS_KEPT)
        .build()
});

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
    let rows: Vec<(i64, i64)> = query.bind(cap as i64 + 1).fetch_all(store.reads()).await?;
    let counts = by_position(rows, expressions.len());
    Ok(counts
        .into_iter()
        .map(|c| c.unwrap_or(0).max(0) as u64)
        .collect())
}

/// Each term's share of chunks by PostgreSQL's statistics, and the row
/// estimate. The statistics (up to 10,000 words) are read once per
/// database and kept for `STATISTICS_KEPT` (they change only when
/// `ANALYZE` runs; reading them costs tens of milliseconds); a term's
/// lexeme (PostgreSQL's stemming) is asked once and kept.
async fn postgres_frequencies(store: &Store, terms: &[String]) -> StoreResult<(Vec<f64>, f64)> {
    let statistics = match STATISTICS.get(&store.identity()).await {
        Some(statistics) => statistics,
        None => {
            let statistics = Arc::new(read_statistics(store).await?);
            STATISTICS
                .insert(store.identity(), statistics.clone())
                .await;
            statistics
        }
    };
    let lexemes = lexemes_kept(store, terms).await?;
    let frequencies = lexemes
        .iter()
        .map(|lexeme| match lexeme {
            Some(lexeme) => statistics
                .by_lexeme
                .get(lexeme)
                .copied()
                .unwrap_or(statistics.unlisted),
            // A stop word: PostgreSQL leaves it out of the query.
            None => 0.0,
        })
        .collect();
    Ok((frequencies, statistics.rows))
}

/// Each term's lexeme, asked of the database only for terms not seen
/// before. Kept by term alone: the built-in 'english' configuration stems
/// alike in every database.
async fn lexemes_kept(store: &Store, terms: &[String]) -> StoreResult<Vec<Option<String>>> {
    kept_or_asked(&LEXEMES, terms, String::clone, |unknown| async move {
        lexemes_of(store, &unknown).await
    })
    .await
}

/// What `pg_stats` says of the `tsv` column, for one database.
struct Statistics {
    rows: f64,
    /// The share of chunks an unlisted word is taken to be in: 0 when the
    /// list is short (every word was listed), else the least listed share.
    unlisted: f64,
    by_lexeme: HashMap<String, f64>,
}

const STATISTICS_KEPT: Duration = Duration::from_secs(300);

/// By database (`Store::identity`): a few, for tests with many databases.
static STATISTICS: LazyLock<Cache<String, Arc<Statistics>>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(4)
        .time_to_live(STATISTICS_KEPT)
        .build()
});

/// By term: None is a stop word.
static LEXEMES: LazyLock<Cache<String, Option<String>>> = LazyLock::new(|| Cache::new(50_000));

/// The listed lexemes with their shares, the share of an unlisted one,
/// and the row estimate (0 before the first `ANALYZE`).
async fn read_statistics(store: &Store) -> StoreResult<Statistics> {
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
    Ok(Statistics {
        rows,
        unlisted,
        by_lexeme: listed.into_iter().collect(),
    })
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
    Ok(by_position(rows, terms.len())
        .into_iter()
        .map(Option::flatten)
        .collect())
}

/// Which rarest-first runs (the first n terms together) need counting:
/// a run matches at most the sum of its terms' counts and at least the
/// largest of them, so the first `surely` runs are within `limit` by their
/// sums, and runs past `possibly` hold a term over it. Only the runs in
/// between are counted; the common words, whose posting lists are long,
/// never are.
pub(super) fn runs_in_doubt(sorted: &[u64], limit: u64) -> (usize, usize) {
    let mut sum = 0u64;
    let surely = sorted
        .iter()
        .take_while(|&&c| {
            sum = sum.saturating_add(c);
            sum <= limit
        })
        .count()
        .max(1);
    let possibly = sorted
        .iter()
        .take_while(|&&c| c <= limit)
        .count()
        .max(surely);
    (surely, possibly)
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

/// Rows of (position, value) as `len` slots in position order: a query
/// over many inputs at once answers in no set order, and may leave some
/// out (None) or name a position out of range (ignored).
fn by_position<T>(rows: Vec<(i64, T)>, len: usize) -> Vec<Option<T>> {
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(len).collect();
    for (i, value) in rows {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| slots.get_mut(i)) {
            *slot = Some(value);
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_position_fill_their_slots_and_ignore_the_rest() {
        let rows = vec![(2, "c"), (0, "a"), (7, "out of range"), (-1, "negative")];
        assert_eq!(by_position(rows, 3), [Some("a"), None, Some("c")]);
    }

    #[test]
    fn only_runs_between_their_sum_and_their_largest_term_are_counted() {
        // 3 + 40 + 300 is within 1,000 and adding 700 is not: three runs
        // are within by their sums. 5,000 is over alone, so the sixth run
        // cannot be within: only runs 4 and 5 are counted.
        assert_eq!(runs_in_doubt(&[3, 40, 300, 700, 900, 5000], 1000), (3, 5));
        assert_eq!(runs_in_doubt(&[3, 40, 300], 1000), (3, 3), "all within");
        assert_eq!(
            runs_in_doubt(&[600, 700, 2000], 1000),
            (1, 2),
            "the rarest always"
        );
        assert_eq!(
            runs_in_doubt(&[3, 2000, 3000], 1000),
            (1, 1),
            "none to count"
        );
    }

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
