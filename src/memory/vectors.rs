//! Vectors: stored in the database (`memory_embeddings`, f32 little-endian
//! with the model and dimension, one row per model and text), searched in
//! process. The search is an exact scan over 8-bit quantised unit vectors:
//! at 100k chunks of 384 dimensions that reads 38 MB per query instead of
//! the 150 MB an f32 scan reads (README's benchmark section has the
//! figures). The index is loaded once per database and model, and loaded
//! again when a chunk or an embedding was added since (their ids only
//! grow); chunks deleted since are dropped when hits are read back.

use std::sync::{Arc, Mutex};

use super::db::Scope;
use crate::store::{Backend, Store, StoreResult, now_ms};

/// `v` as f32 little-endian bytes.
pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector `bytes` hold (a trailing partial value is ignored).
pub fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The distinct texts of `source`'s chunks that have no vector for `model`:
/// (content hash, text).
pub async fn missing_for_source(
    store: &Store,
    source: &str,
    model: &str,
) -> StoreResult<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.content_hash, MIN(c.text) FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         WHERE s.name = $1 AND NOT EXISTS (
             SELECT 1 FROM memory_embeddings e WHERE e.model = $2 AND e.content_hash = c.content_hash)
         GROUP BY c.content_hash ORDER BY MIN(c.seq)",
    )
    .bind(source)
    .bind(model)
    .fetch_all(store.pool())
    .await?;
    Ok(rows)
}

/// Stores vectors by content hash; a vector already there is kept.
pub async fn insert(store: &Store, model: &str, vectors: &[(String, Vec<f32>)]) -> StoreResult<()> {
    let now = now_ms();
    let mut tx = store.pool().begin().await?;
    for (hash, vector) in vectors {
        sqlx::query(
            "INSERT INTO memory_embeddings (model, content_hash, dims, vector, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model, content_hash) DO NOTHING",
        )
        .bind(model)
        .bind(hash)
        .bind(vector.len() as i32)
        .bind(encode(vector))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Unit vectors quantised to i8 with one scale each, for one database and
/// model.
#[derive(Debug)]
pub struct VectorIndex {
    key: String,
    signature: (i64, i64),
    dims: usize,
    ids: Vec<i64>,
    scales: Vec<f32>,
    codes: Vec<i8>,
}

/// `v` scaled to unit length, then to i8: (codes, scale). A zero vector
/// gets scale 0 (it matches nothing).
pub fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if norm == 0.0 || max == 0.0 || !norm.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let step = max / norm / 127.0;
    let codes = v
        .iter()
        .map(|x| ((x / norm) / step).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, step)
}

fn dot(a: &[i8], b: &[i8]) -> i32 {
    // Written plainly so the compiler vectorises it (pmaddwd on x86-64).
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

impl VectorIndex {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `n` chunks most similar to `query` (cosine, approximate through
    /// the quantisation), best first.
    pub fn search(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dims || self.ids.is_empty() || n == 0 {
            return Vec::new();
        }
        let (q, q_scale) = quantise(query);
        let mut scored: Vec<(f32, u32)> = self
            .codes
            .chunks_exact(self.dims)
            .zip(&self.scales)
            .enumerate()
            .map(|(i, (codes, scale))| (dot(&q, codes) as f32 * scale * q_scale, i as u32))
            .collect();
        let n = n.min(scored.len());
        if n < scored.len() {
            scored.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(n);
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .map(|(score, i)| (self.ids[i as usize], score))
            .collect()
    }
}

/// Loaded indexes, most recent last; a few, so a process serving one
/// database keeps its index and tests with many databases stay bounded.
static INDEXES: Mutex<Vec<Arc<VectorIndex>>> = Mutex::new(Vec::new());
const KEEP_INDEXES: usize = 4;

/// Which database this is, and the largest chunk and embedding ids.
async fn signature(store: &Store) -> StoreResult<(String, i64, i64)> {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT (SELECT file FROM pragma_database_list WHERE name = 'main'),
                    (SELECT COALESCE(MAX(id), 0) FROM memory_chunks),
                    (SELECT COALESCE(MAX(id), 0) FROM memory_embeddings)"
        }
        Backend::Postgres => {
            "SELECT current_database() || '@' || COALESCE(host(inet_server_addr()), 'socket')
                    || ':' || CAST(COALESCE(inet_server_port(), 0) AS TEXT),
                    (SELECT COALESCE(MAX(id), 0) FROM memory_chunks),
                    (SELECT COALESCE(MAX(id), 0) FROM memory_embeddings)"
        }
    };
    Ok(sqlx::query_as(sql).fetch_one(store.pool()).await?)
}

/// The knowledge index for `model`, loaded again when stale.
pub async fn index(store: &Store, model: &str) -> StoreResult<Arc<VectorIndex>> {
    let (database, chunks, embeddings) = signature(store).await?;
    let key = format!("{database}\u{0}{model}");
    let current = (chunks, embeddings);
    {
        let indexes = INDEXES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = indexes
            .iter()
            .find(|i| i.key == key && i.signature == current)
        {
            return Ok(index.clone());
        }
    }
    let index = Arc::new(load(store, model, key, current).await?);
    let mut indexes = INDEXES.lock().unwrap_or_else(|e| e.into_inner());
    indexes.retain(|i| i.key != index.key);
    indexes.push(index.clone());
    if indexes.len() > KEEP_INDEXES {
        indexes.remove(0);
    }
    Ok(index)
}

async fn load(
    store: &Store,
    model: &str,
    key: String,
    signature: (i64, i64),
) -> StoreResult<VectorIndex> {
    let sql = format!(
        "SELECT c.id, e.vector FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         JOIN memory_embeddings e ON e.model = $1 AND e.content_hash = c.content_hash
         WHERE {} ORDER BY c.id",
        Scope::Knowledge.condition()
    );
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(model)
        .fetch_all(store.pool())
        .await?;
    let dims = rows.first().map_or(0, |(_, v)| v.len() / 4);
    let mut index = VectorIndex {
        key,
        signature,
        dims,
        ids: Vec::with_capacity(rows.len()),
        scales: Vec::with_capacity(rows.len()),
        codes: Vec::with_capacity(rows.len() * dims),
    };
    for (id, bytes) in rows {
        // A model whose width changed keeps old rows of the other width;
        // they cannot be compared, so they are left out.
        if bytes.len() / 4 != dims {
            continue;
        }
        let (codes, scale) = quantise(&decode(&bytes));
        index.ids.push(id);
        index.scales.push(scale);
        index.codes.extend(codes);
    }
    tracing::debug!(
        model,
        vectors = index.ids.len(),
        dims,
        "vector index loaded"
    );
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_as_little_endian_f32() {
        let v = vec![1.5f32, -0.25, 0.0, 3.0e-7];
        assert_eq!(decode(&encode(&v)), v);
        assert_eq!(&encode(&[1.0])[..], &[0, 0, 0x80, 0x3f]);
    }

    #[test]
    fn the_quantised_scan_ranks_by_cosine() {
        let vectors: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.7, 0.7, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
            vec![-1.0, 0.0, 0.0, 0.0],
        ];
        let mut index = VectorIndex {
            key: String::new(),
            signature: (0, 0),
            dims: 4,
            ids: Vec::new(),
            scales: Vec::new(),
            codes: Vec::new(),
        };
        for (i, v) in vectors.iter().enumerate() {
            let (codes, scale) = quantise(v);
            index.ids.push(i as i64 + 10);
            index.scales.push(scale);
            index.codes.extend(codes);
        }
        let hits = index.search(&[0.9, 0.1, 0.0, 0.0], 3);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [10, 11, 12],
            "{hits:?}"
        );
        assert!((hits[0].1 - 0.9939).abs() < 0.01, "{hits:?}");
        assert!(index.search(&[1.0, 0.0], 3).is_empty(), "wrong width");
    }
}
