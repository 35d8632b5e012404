//! `soloist_bm25`: FTS5's own bm25, except that each phrase's match count
//! is given by the caller instead of counted by the function.
//!
//! FTS5's `bm25()` counts how many rows each phrase matches by walking the
//! phrase's whole posting list, once per query, to weigh rare words above
//! common ones. Full-text retrieval ranks at most a few hundred matches
//! (`memory::fulltext::search_knowledge`), but a word in 73% of 100k chunks
//! made that count read 73k entries: measured 2.2 ms of a 2.3 ms query,
//! against 0.05 ms for the same window unranked. Retrieval has already
//! counted each word's matches (up to its rank cap, kept five minutes), so
//! it passes them in:
//!
//! `soloist_bm25(memory_fts, weight_of_column_0, …, 'count_0 count_1 …')`
//!
//! The column weights come first, one per column, as `bm25()` takes them;
//! then one text argument with each phrase's match count, in the order the
//! phrases appear in the MATCH expression. With the true counts the score is
//! `bm25()`'s to the last bit (a test checks it); a count cut at the cap
//! only changes the weight of that one word, which leaves the order of a
//! one-word ranking as it was.
//!
//! Registered for every SQLite connection the process opens
//! (`sqlite3_auto_extension`, the hook SQLite has for this), since sqlx's
//! `Any` pool hands out no raw SQLite handle.

use std::ffi::{c_char, c_int};
use std::ptr;
use std::sync::Once;

use libsqlite3_sys as ffi;

/// bm25's constants, as FTS5 has them.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Makes `soloist_bm25` known to every SQLite connection opened from now on.
pub fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `add_to_connection` has the entry point signature SQLite
        // expects; SQLite calls it on each new connection, before the
        // connection is used.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(add_to_connection)) };
        if rc != ffi::SQLITE_OK {
            tracing::error!(rc, "soloist_bm25 could not be registered with SQLite");
        }
    });
}

/// SQLite's entry point: finds the connection's FTS5 API and adds the
/// function to it. A connection without FTS5 is left as it is (a query
/// naming the function then fails with "no such function").
unsafe extern "C" fn add_to_connection(
    db: *mut ffi::sqlite3,
    _error: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // Finding the FTS5 API prepares a statement, which reads the schema and
    // so needs a shared lock. Without a busy timeout (sqlx sets its own
    // only after the open) a connection opened while another was
    // checkpointing failed at once with "database is locked": SQLite fails
    // the open when an extension's setup leaves an error behind.
    // SAFETY: `db` is the open connection SQLite passes in.
    unsafe { ffi::sqlite3_busy_timeout(db, 5_000) };
    // SAFETY: as above.
    let api = match unsafe { fts5_api(db) } {
        Ok(api) if !api.is_null() => api,
        Ok(_) => return ffi::SQLITE_OK,
        Err(rc) => return rc,
    };
    // SAFETY: `api` is the FTS5 API of this connection, valid while it is
    // open; the name is a static C string; no user data, nothing to free.
    unsafe {
        match (*api).xCreateFunction {
            Some(create) => create(
                api,
                c"soloist_bm25".as_ptr(),
                ptr::null_mut(),
                Some(soloist_bm25),
                None,
            ),
            None => ffi::SQLITE_OK,
        }
    }
}

/// The connection's `fts5_api`, got the documented way: `SELECT fts5(?1)`
/// with a pointer bound under the type "fts5_api_ptr". Null when the
/// statement runs but hands nothing back; the error code when it fails
/// (a lock held too long, a build without FTS5), so the open fails with it.
unsafe fn fts5_api(db: *mut ffi::sqlite3) -> Result<*mut ffi::fts5_api, c_int> {
    let mut api: *mut ffi::fts5_api = ptr::null_mut();
    let mut statement: *mut ffi::sqlite3_stmt = ptr::null_mut();
    // SAFETY: a valid connection, a static SQL text, and a statement
    // finalised before `api`'s slot goes out of scope.
    unsafe {
        let sql = c"SELECT fts5(?1)";
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut statement, ptr::null_mut());
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        ffi::sqlite3_bind_pointer(
            statement,
            1,
            (&raw mut api).cast(),
            c"fts5_api_ptr".as_ptr(),
            None,
        );
        ffi::sqlite3_step(statement);
        let rc = ffi::sqlite3_finalize(statement);
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
    }
    Ok(api)
}

/// The auxiliary function FTS5 calls for each row it ranks.
unsafe extern "C" fn soloist_bm25(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    context: *mut ffi::sqlite3_context,
    count: c_int,
    values: *mut *mut ffi::sqlite3_value,
) {
    let values: &[*mut ffi::sqlite3_value] = if values.is_null() || count <= 0 {
        &[]
    } else {
        // SAFETY: SQLite passes `count` argument values.
        unsafe { std::slice::from_raw_parts(values, count as usize) }
    };
    // SAFETY: `api` and `fts` are FTS5's own, valid during this call.
    match unsafe { score(&*api, fts, values) } {
        // Negated, as bm25() is: better matches sort first ascending.
        Ok(score) => unsafe { ffi::sqlite3_result_double(context, -score) },
        Err(Failure::Code(rc)) => unsafe { ffi::sqlite3_result_error_code(context, rc) },
        Err(Failure::Usage) => unsafe {
            let message = c"soloist_bm25: give a weight for each column, then the phrases' match counts as one text";
            ffi::sqlite3_result_error(context, message.as_ptr(), -1);
        },
    }
}

enum Failure {
    Code(c_int),
    Usage,
}

fn ok(rc: c_int) -> Result<(), Failure> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(Failure::Code(rc))
    }
}

/// bm25 of the current row, as FTS5's `fts5Bm25Function` computes it, with
/// the phrases' match counts read from the last argument.
unsafe fn score(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    values: &[*mut ffi::sqlite3_value],
) -> Result<f64, Failure> {
    let (Some(column_count), Some(phrase_count), Some(row_count), Some(total_size)) = (
        api.xColumnCount,
        api.xPhraseCount,
        api.xRowCount,
        api.xColumnTotalSize,
    ) else {
        return Err(Failure::Code(ffi::SQLITE_MISUSE));
    };
    let (Some(inst_count), Some(inst), Some(column_size)) =
        (api.xInstCount, api.xInst, api.xColumnSize)
    else {
        return Err(Failure::Code(ffi::SQLITE_MISUSE));
    };
    // SAFETY (the block): each call is FTS5's own API on its own context,
    // with out-pointers to locals.
    unsafe {
        let columns = column_count(fts).max(0) as usize;
        let phrases = phrase_count(fts).max(0) as usize;
        let Some(&counts) = values.get(columns) else {
            return Err(Failure::Usage);
        };
        let counts = text_of(counts);
        let hits: Vec<f64> = counts
            .split_ascii_whitespace()
            .map(|n| n.parse::<f64>().map_err(|_| Failure::Usage))
            .collect::<Result<_, _>>()?;
        if hits.len() < phrases {
            return Err(Failure::Usage);
        }
        let mut rows = 0i64;
        ok(row_count(fts, &mut rows))?;
        let mut tokens = 0i64;
        ok(total_size(fts, -1, &mut tokens))?;
        let average_length = tokens as f64 / rows as f64;

        let mut frequency = vec![0f64; phrases];
        let mut instances = 0;
        ok(inst_count(fts, &mut instances))?;
        for i in 0..instances {
            let (mut phrase, mut column, mut offset) = (0, 0, 0);
            ok(inst(fts, i, &mut phrase, &mut column, &mut offset))?;
            let weight = values
                .get(column as usize)
                .filter(|_| (column as usize) < columns)
                .map_or(1.0, |v| ffi::sqlite3_value_double(*v));
            if let Some(f) = frequency.get_mut(phrase as usize) {
                *f += weight;
            }
        }
        let mut length = 0;
        ok(column_size(fts, -1, &mut length))?;
        let length = f64::from(length);

        let rows = rows as f64;
        Ok(frequency
            .iter()
            .zip(&hits)
            .map(|(f, n)| {
                let idf = ((rows - n + 0.5) / (n + 0.5)).ln();
                let idf = if idf <= 0.0 { 1e-6 } else { idf };
                idf * (f * (K1 + 1.0)) / (f + K1 * (1.0 - B + B * length / average_length))
            })
            .sum())
    }
}

/// A text argument as a string (empty when it is not text).
unsafe fn text_of<'a>(value: *mut ffi::sqlite3_value) -> &'a str {
    // SAFETY: SQLite keeps the text valid until the function returns;
    // the length is asked after the text, as SQLite's docs require.
    unsafe {
        let text = ffi::sqlite3_value_text(value);
        if text.is_null() {
            return "";
        }
        let length = ffi::sqlite3_value_bytes(value).max(0) as usize;
        std::str::from_utf8(std::slice::from_raw_parts(text, length)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    #[tokio::test]
    async fn with_the_true_match_counts_the_score_is_fts5s_own_bm25() {
        super::register();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query(
            "CREATE VIRTUAL TABLE t USING fts5(section, text, tokenize = 'porter unicode61')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let rows = [
            ("Brand sprint", "A brand sprint is five days of brand work."),
            (
                "Pricing",
                "The sprint costs 4,000 euros; a deposit books it.",
            ),
            ("Refunds", "Refunds within 14 days, no questions."),
            ("Brand", "Brand voice: plain, warm, short sentences."),
            ("Team", "Two designers and a strategist run every sprint."),
        ];
        for (section, text) in rows {
            sqlx::query("INSERT INTO t (section, text) VALUES ($1, $2)")
                .bind(section)
                .bind(text)
                .execute(&pool)
                .await
                .unwrap();
        }
        let query = "\"brand\" OR \"sprint\" OR \"days\"";
        let mut counts = Vec::new();
        for phrase in ["\"brand\"", "\"sprint\"", "\"days\""] {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE t MATCH $1")
                .bind(phrase)
                .fetch_one(&pool)
                .await
                .unwrap();
            counts.push(n.to_string());
        }
        let scored: Vec<(i64, f64, f64)> = sqlx::query_as(
            "SELECT rowid, bm25(t, 3.0, 1.0), soloist_bm25(t, 3.0, 1.0, $2)
             FROM t WHERE t MATCH $1 ORDER BY rowid",
        )
        .bind(query)
        .bind(counts.join(" "))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(scored.len(), 5, "every row matches a word: {scored:?}");
        for (rowid, theirs, ours) in &scored {
            assert!(
                (theirs - ours).abs() <= 1e-12 * theirs.abs().max(1.0),
                "row {rowid}: bm25 {theirs}, soloist_bm25 {ours}"
            );
        }

        // Without the counts it says how it is called, and does not guess.
        let error = sqlx::query("SELECT soloist_bm25(t, 3.0, 1.0) FROM t WHERE t MATCH 'brand'")
            .fetch_all(&pool)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("match counts"), "{error}");
    }
}
