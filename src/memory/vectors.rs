//! Vectors: stored in the database (`memory_embeddings`, f32 little-endian
//! with the model and dimension, one row per model and text), searched in
//! process, in two passes: a Hamming scan over one bit a dimension (the
//! sign of the vector less the corpus mean: 48 bytes a vector at 384
//! dimensions, 4.8 MB at 100k chunks, where an f32 scan reads 150 MB), then
//! the best few hundred of those rescored by cosine over 8-bit quantised
//! unit vectors. The rescoring fixes the order; the first pass only has to
//! keep the true neighbours among its candidates, which it does for
//! embeddings (the bench prints its recall against the exact scan, and
//! README's benchmark section has the figures). An HNSW graph would read
//! less still, but it costs a build on every load and an approximation the
//! rescoring cannot repair. The index is loaded once per database and
//! model; when chunks or embeddings are added (their ids only grow) it is
//! extended with the new rows alone, and loaded whole again at most every
//! [`FULL_LOAD_EVERY`]. Chunks deleted since the last full load stay in it
//! until the next one and are dropped when hits are read back.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use moka::future::Cache;

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
    store.commit_durably(tx).await?;
    Ok(())
}

/// Unit vectors quantised to i8 with one scale each, and their sign bits
/// around the mean, for one database and model.
#[derive(Debug)]
pub struct VectorIndex {
    signature: (i64, i64),
    dims: usize,
    ids: Vec<i64>,
    scales: Vec<f32>,
    codes: Vec<i8>,
    /// The mean of the unit vectors: signs are taken around it, since
    /// embeddings share a common direction that would set most bits alike.
    mean: Vec<f32>,
    /// `words()` u64 a vector: bit d is set when dimension d is above the mean.
    bits: Vec<u64>,
    /// When the full load this index comes from was made.
    loaded_at: Instant,
    /// Rows read from the database to make it: every row after a full
    /// load, the new ones after an extension.
    rows_read: usize,
}

/// How long an index is extended with the rows added since, before it is
/// loaded whole again. An extension keeps the mean of the full load (the
/// sign bits' reference) and the chunks deleted since, which read-back
/// drops but which can take a candidate's place: a full load now and then
/// renews both, and picks up a row an extension missed: PostgreSQL hands
/// out an id when a row is inserted, not when it commits, so a transaction
/// can commit a smaller id after a load saw a larger one (on SQLite, with
/// one writer, ids commit in order).
const FULL_LOAD_EVERY: Duration = Duration::from_secs(600);

/// How many first-pass candidates are rescored for each hit asked for
/// (at least `MIN_RESCORED`).
/// Rescoring is cheap (2,048 × 384 bytes is 0.8 MB), the Hamming pass is
/// coarse: generous numbers keep its recall high.
const RESCORE_PER_HIT: usize = 64;
const MIN_RESCORED: usize = 2048;

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

// The hot loops below are plain index loops, not iterator chains that
// collect or sum: the release build optimises for size, and there the
// standard library's `collect`/`extend` stay out-of-line functions compiled
// for the baseline CPU, so the AVX2 copy of the search spent its time in
// them, counting bits without POPCNT (measured in the bench: the vector
// pass took 1.6 ms at 100k, most of it in `from_iter`).
#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut sum = 0i32;
    // Written plainly so the compiler vectorises it (pmaddwd on x86-64).
    for i in 0..len {
        sum += i32::from(a[i]) * i32::from(b[i]);
    }
    sum
}

/// How many candidates ahead of the one scored its row is fetched.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading `bytes` into its cache, without waiting.
#[inline(always)]
fn prefetch(bytes: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it never faults and changes nothing
        // the program can see; the pointer is in bounds anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// The sign bits of `unit - mean`, 64 dimensions a word.
fn sign_bits(unit: &[f32], mean: &[f32], out: &mut Vec<u64>) {
    for (block, means) in unit.chunks(64).zip(mean.chunks(64)) {
        let word = block
            .iter()
            .zip(means)
            .enumerate()
            .filter(|(_, (x, m))| x > m)
            .fold(0u64, |w, (i, _)| w | 1 << i);
        out.push(word);
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return vec![0.0; v.len()];
    }
    v.iter().map(|x| x / norm).collect()
}

/// Hamming distances of `query` to every vector's bits, into `out`.
#[inline(always)]
fn hamming_all(query: &[u64], bits: &[u64], out: &mut Vec<u16>) {
    // 384 dimensions (six words) is the common width: a fixed length lets
    // the compiler unroll the inner loop.
    if let Ok(query) = <&[u64; 6]>::try_from(query) {
        return hamming_fixed(query, bits, out);
    }
    let width = query.len().max(1);
    let n = bits.len() / width;
    out.clear();
    out.resize(n, 0);
    for (i, distance) in out.iter_mut().enumerate() {
        let row = &bits[i * width..(i + 1) * width];
        let mut d = 0u32;
        for w in 0..width {
            d += (row[w] ^ query[w]).count_ones();
        }
        *distance = d as u16;
    }
}

#[inline(always)]
fn hamming_fixed<const W: usize>(query: &[u64; W], bits: &[u64], out: &mut Vec<u16>) {
    let n = bits.len() / W;
    out.clear();
    out.resize(n, 0);
    for (i, distance) in out.iter_mut().enumerate() {
        let row: &[u64; W] = bits[i * W..(i + 1) * W].try_into().unwrap_or(&[0; W]);
        let mut d = 0u32;
        for w in 0..W {
            d += (row[w] ^ query[w]).count_ones();
        }
        *distance = d as u16;
    }
}

impl VectorIndex {
    /// An index over `(id, vector)`; vectors of another width than the
    /// first are left out (a model whose width changed keeps old rows).
    pub fn build(signature: (i64, i64), vectors: &[(i64, Vec<f32>)]) -> Self {
        let mut builder = Builder::default();
        for (id, vector) in vectors {
            builder.add(*id, vector);
        }
        builder.finish(signature)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Rows read from the database to make this index: all of them after a
    /// full load, only the new ones after an extension.
    pub fn rows_read(&self) -> usize {
        self.rows_read
    }

    /// Whether the rows behind `signature` can be added to this index
    /// rather than loaded whole.
    fn extends_to(&self, signature: (i64, i64)) -> bool {
        !self.ids.is_empty()
            && self.loaded_at.elapsed() < FULL_LOAD_EVERY
            && signature.0 >= self.signature.0
            && signature.1 >= self.signature.1
    }

    /// This index with `rows` added, except those whose chunk it holds
    /// already, their sign bits taken around its mean.
    fn with_added(&self, signature: (i64, i64), rows: &[(i64, Vec<u8>)]) -> VectorIndex {
        let mut present: HashSet<i64> = self.ids.iter().copied().collect();
        let mut index = VectorIndex {
            signature,
            dims: self.dims,
            ids: self.ids.clone(),
            scales: self.scales.clone(),
            codes: self.codes.clone(),
            mean: self.mean.clone(),
            bits: self.bits.clone(),
            loaded_at: self.loaded_at,
            rows_read: rows.len(),
        };
        let mut scratch = vec![0f32; self.dims];
        for (id, bytes) in rows {
            let vector = decode(bytes);
            if vector.len() != self.dims || !present.insert(*id) {
                continue;
            }
            let (codes, scale) = quantise(&unit(&vector));
            bits_of_codes(&codes, scale, &index.mean, &mut scratch, &mut index.bits);
            index.ids.push(*id);
            index.scales.push(scale);
            index.codes.extend(codes);
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `n` chunks most similar to `query` (cosine, approximate through
    /// the quantisation), best first: the Hamming pass keeps the nearest
    /// `RESCORE_PER_HIT × n` (at least `MIN_RESCORED`), cosine orders them.
    pub fn search(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dims || self.ids.is_empty() || n == 0 {
            return Vec::new();
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the CPU has AVX2 and POPCNT (checked just above).
            return unsafe { self.two_passes_avx2(query, n) };
        }
        self.two_passes(query, n)
    }

    /// The same, compiled for AVX2 and POPCNT, which x86-64's baseline
    /// lacks (without POPCNT, `count_ones` is a dozen instructions a word).
    /// Measured in a separate test program on 100k random vectors, cache
    /// warm: 0.87 ms for the baseline copy, 0.58 ms for this one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn two_passes_avx2(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        self.two_passes(query, n)
    }

    // Inlined, with everything it calls, so that the AVX2 copy above
    // really is compiled for AVX2.
    #[inline(always)]
    fn two_passes(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        let rescored = (n * RESCORE_PER_HIT).max(MIN_RESCORED);
        let candidates: Vec<u32> = if rescored >= self.ids.len() {
            (0..self.ids.len() as u32).collect()
        } else {
            self.nearest_by_bits(query, rescored)
        };
        self.rescore(query, candidates, n)
    }

    /// Every vector, exactly rescored: what `search` approximates (the
    /// bench measures its recall against this).
    pub fn search_exact(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dims || self.ids.is_empty() || n == 0 {
            return Vec::new();
        }
        self.rescore(query, (0..self.ids.len() as u32).collect(), n)
    }

    /// The positions of the `m` vectors whose sign bits are nearest the
    /// query's: a histogram of distances (0..=dims) finds the cut without
    /// sorting 100k of them.
    #[inline(always)]
    fn nearest_by_bits(&self, query: &[f32], m: usize) -> Vec<u32> {
        let mut q = Vec::with_capacity(self.dims.div_ceil(64));
        sign_bits(&unit(query), &self.mean, &mut q);
        let mut distances = Vec::with_capacity(self.ids.len());
        hamming_all(&q, &self.bits, &mut distances);
        let mut histogram = vec![0usize; self.dims + 1];
        for d in &distances {
            histogram[usize::from(*d)] += 1;
        }
        let mut cut = 0;
        let mut within = 0;
        for (d, count) in histogram.iter().enumerate() {
            within += count;
            cut = d;
            if within >= m {
                break;
            }
        }
        // Every vector nearer than the cut, and at the cut only as many as
        // make `m`: a distance bin holds thousands at 100k, and rescoring
        // them all would double the second pass.
        let cut = cut as u16;
        let mut at_cut = m.saturating_sub(within - histogram[usize::from(cut)]);
        let mut nearest = Vec::with_capacity(m);
        for (i, &d) in distances.iter().enumerate() {
            if d < cut {
                nearest.push(i as u32);
            } else if d == cut && at_cut > 0 {
                at_cut -= 1;
                nearest.push(i as u32);
            }
        }
        nearest
    }

    /// `candidates` (positions) ordered by quantised cosine; best `n`.
    #[inline(always)]
    fn rescore(&self, query: &[f32], candidates: Vec<u32>, n: usize) -> Vec<(i64, f32)> {
        let (q, q_scale) = quantise(query);
        let row = |i: u32| {
            let at = i as usize * self.dims;
            &self.codes[at..at + self.dims]
        };
        let mut scored: Vec<(f32, u32)> = Vec::with_capacity(candidates.len());
        for (j, &i) in candidates.iter().enumerate() {
            // The candidates are scattered over the codes (38 MB at 100k):
            // waiting for each row in turn was most of the rescoring's time.
            if let Some(&later) = candidates.get(j + PREFETCH_AHEAD) {
                prefetch(row(later));
            }
            let cosine = dot(&q, row(i)) as f32 * self.scales[i as usize] * q_scale;
            scored.push((cosine, i));
        }
        let n = n.min(scored.len());
        if n == 0 {
            return Vec::new();
        }
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

/// An index taking its vectors one at a time, each kept only as its
/// quantised codes: at 100k chunks of 384 dimensions the rows as f32 are
/// 150 MB, the codes 38 MB, and a load that read every row before building
/// held both. The sign bits need the mean of all the vectors, so they are
/// taken at the end, from the codes (each within half a quantisation step
/// of its unit vector, which moves a bit only for a dimension that close
/// to the mean, where either sign is as near).
#[derive(Default)]
struct Builder {
    dims: usize,
    ids: Vec<i64>,
    scales: Vec<f32>,
    codes: Vec<i8>,
    sum: Vec<f64>,
}

impl Builder {
    fn add(&mut self, id: i64, vector: &[f32]) {
        if self.ids.is_empty() {
            self.dims = vector.len();
            self.sum = vec![0.0; vector.len()];
        }
        if vector.len() != self.dims {
            return;
        }
        let unit = unit(vector);
        for (total, x) in self.sum.iter_mut().zip(&unit) {
            *total += f64::from(*x);
        }
        let (codes, scale) = quantise(&unit);
        self.ids.push(id);
        self.scales.push(scale);
        self.codes.extend(codes);
    }

    fn finish(self, signature: (i64, i64)) -> VectorIndex {
        let count = self.ids.len().max(1) as f64;
        let mean: Vec<f32> = self.sum.iter().map(|t| (t / count) as f32).collect();
        let mut bits = Vec::with_capacity(self.ids.len() * self.dims.div_ceil(64));
        let mut unit = vec![0f32; self.dims];
        for (row, scale) in self.codes.chunks_exact(self.dims.max(1)).zip(&self.scales) {
            bits_of_codes(row, *scale, &mean, &mut unit, &mut bits);
        }
        VectorIndex {
            signature,
            dims: self.dims,
            rows_read: self.ids.len(),
            ids: self.ids,
            scales: self.scales,
            codes: self.codes,
            mean,
            bits,
            loaded_at: Instant::now(),
        }
    }
}

/// The sign bits of a quantised vector (`codes` × `scale`) around `mean`;
/// `unit` is scratch space of the vector's width.
fn bits_of_codes(codes: &[i8], scale: f32, mean: &[f32], unit: &mut [f32], bits: &mut Vec<u64>) {
    for (x, code) in unit.iter_mut().zip(codes) {
        *x = f32::from(*code) * scale;
    }
    sign_bits(unit, mean, bits);
}

/// Loaded indexes by database and model; a few, so a process serving one
/// database keeps its index and tests with many databases stay bounded.
static INDEXES: LazyLock<Cache<String, Arc<VectorIndex>>> =
    LazyLock::new(|| Cache::new(KEEP_INDEXES));
const KEEP_INDEXES: u64 = 4;

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
    Ok(sqlx::query_as(sql).fetch_one(store.reads()).await?)
}

/// The knowledge index for `model`, loaded again when stale.
pub async fn index(store: &Store, model: &str) -> StoreResult<Arc<VectorIndex>> {
    let (database, chunks, embeddings) = signature(store).await?;
    let key = format!("{database}\u{0}{model}");
    let current = (chunks, embeddings);
    let kept = INDEXES.get(&key).await;
    if let Some(index) = kept.as_ref().filter(|i| i.signature == current) {
        return Ok(index.clone());
    }
    let index = match kept {
        Some(old) if old.extends_to(current) => {
            Arc::new(extend(store, model, &old, current).await?)
        }
        _ => Arc::new(load(store, model, current).await?),
    };
    INDEXES.insert(key, index.clone()).await;
    Ok(index)
}

/// `old` with the vectors of chunks and embeddings added since it was
/// made (new chunks, and older chunks whose text was embedded since, each
/// read by its own key range), or a full load when they
/// are many: a quarter of the index more may have moved its mean.
async fn extend(
    store: &Store,
    model: &str,
    old: &VectorIndex,
    signature: (i64, i64),
) -> StoreResult<VectorIndex> {
    let knowledge = Scope::Knowledge.condition();
    let sql = format!(
        "SELECT c.id, e.vector FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         JOIN memory_embeddings e ON e.model = $1 AND e.content_hash = c.content_hash
         WHERE c.id > $2 AND {knowledge}
         UNION ALL
         SELECT c.id, e.vector FROM memory_embeddings e
         JOIN memory_chunks c ON c.content_hash = e.content_hash
         JOIN memory_sources s ON s.id = c.source_id
         WHERE e.model = $1 AND e.id > $3 AND c.id <= $2 AND {knowledge}"
    );
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(model)
        .bind(old.signature.0)
        .bind(old.signature.1)
        .fetch_all(store.reads())
        .await?;
    // The two key ranges are disjoint and neither holds a chunk the index
    // has, so every row read is a vector to add.
    if rows.len() * 4 >= old.len() {
        return load(store, model, signature).await;
    }
    let index = old.with_added(signature, &rows);
    tracing::debug!(
        model,
        vectors = index.ids.len(),
        read = rows.len(),
        "vector index extended"
    );
    Ok(index)
}

/// Reads the rows as they come, in no particular order: ordered by chunk,
/// SQLite sorted the whole result (150 MB at 100k chunks) in temporary
/// files first.
async fn load(store: &Store, model: &str, signature: (i64, i64)) -> StoreResult<VectorIndex> {
    use futures::TryStreamExt;
    let sql = format!(
        "SELECT c.id, e.vector FROM memory_chunks c
         JOIN memory_sources s ON s.id = c.source_id
         JOIN memory_embeddings e ON e.model = $1 AND e.content_hash = c.content_hash
         WHERE {}",
        Scope::Knowledge.condition()
    );
    let mut builder = Builder::default();
    let mut rows = sqlx::query_as::<_, (i64, Vec<u8>)>(sqlx::AssertSqlSafe(sql))
        .bind(model)
        .fetch(store.reads());
    while let Some((id, bytes)) = rows.try_next().await? {
        builder.add(id, &decode(&bytes));
    }
    drop(rows);
    let index = builder.finish(signature);
    tracing::debug!(
        model,
        vectors = index.ids.len(),
        dims = index.dims,
        "vector index loaded"
    );
    Ok(index)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn vectors_round_trip_as_little_endian_f32() {
        let v = vec![1.5f32, -0.25, 0.0, 3.0e-7];
        assert_eq!(decode(&encode(&v)), v);
        assert_eq!(&encode(&[1.0])[..], &[0, 0, 0x80, 0x3f]);
    }

    #[test]
    fn the_quantised_scan_ranks_by_cosine() {
        let vectors = vec![
            vec![1.0f32, 0.0, 0.0, 0.0],
            vec![0.7, 0.7, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
            vec![-1.0, 0.0, 0.0, 0.0],
        ];
        let vectors: Vec<(i64, Vec<f32>)> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as i64 + 10, v))
            .collect();
        let index = VectorIndex::build((0, 0), &vectors);
        let hits = index.search(&[0.9, 0.1, 0.0, 0.0], 3);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [10, 11, 12],
            "{hits:?}"
        );
        assert!((hits[0].1 - 0.9939).abs() < 0.01, "{hits:?}");
        assert!(index.search(&[1.0, 0.0], 3).is_empty(), "wrong width");
    }

    /// Vectors near one of a few directions, as embeddings of texts on a
    /// few topics are: a deterministic spread with noise.
    fn clustered(n: usize, dims: usize, seed: u64) -> Vec<(i64, Vec<f32>)> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let centre = &centres[i % centres.len()];
                // A shared offset, as real embeddings have.
                let v = centre.iter().map(|c| 0.3 + c + 0.6 * next()).collect();
                (i as i64, v)
            })
            .collect()
    }

    #[test]
    fn the_two_pass_search_finds_what_the_exact_scan_finds() {
        let vectors = clustered(5_000, 384, 7);
        let index = VectorIndex::build((0, 0), &vectors);
        let mut found = 0;
        let mut asked = 0;
        for (_, query) in vectors.iter().step_by(97).take(40) {
            let exact: BTreeSet<i64> = index.search_exact(query, 10).iter().map(|h| h.0).collect();
            let fast = index.search(query, 10);
            assert_eq!(fast.len(), 10);
            assert!(fast.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            found += fast.iter().filter(|h| exact.contains(&h.0)).count();
            asked += exact.len();
        }
        let recall = found as f64 / asked as f64;
        assert!(recall >= 0.9, "recall {recall}");
    }

    #[test]
    fn a_vector_finds_itself_first_among_many() {
        let vectors = clustered(3_000, 64, 11);
        let index = VectorIndex::build((0, 0), &vectors);
        for (id, v) in vectors.iter().step_by(301) {
            let hits = index.search(v, 1);
            assert_eq!(hits[0].0, *id);
            assert!(hits[0].1 > 0.98, "{hits:?}");
        }
    }

    #[test]
    fn vectors_added_to_an_index_are_found_and_ones_it_holds_are_not_added_twice() {
        let vectors = clustered(3_000, 64, 11);
        let (old, new) = vectors.split_at(2_900);
        let index = VectorIndex::build((2_900, 2_900), old);
        let rows: Vec<(i64, Vec<u8>)> = new
            .iter()
            .chain(&old[..5])
            .map(|(id, v)| (*id, encode(v)))
            .collect();
        let extended = index.with_added((3_000, 3_000), &rows);
        assert_eq!(
            extended.len(),
            3_000,
            "the five it held are not added again"
        );
        assert_eq!(extended.rows_read(), 105);
        assert_eq!(extended.signature, (3_000, 3_000));
        for (id, v) in new.iter().step_by(7).chain(old.iter().step_by(301)) {
            let hits = extended.search(v, 1);
            assert_eq!(hits[0].0, *id);
            assert!(hits[0].1 > 0.98, "{hits:?}");
        }
    }

    #[test]
    fn sign_bits_are_taken_around_the_mean() {
        let mut bits = Vec::new();
        sign_bits(&[0.5, 0.1, -0.2], &[0.2, 0.2, -0.3], &mut bits);
        assert_eq!(bits, [0b101]);
        let mut distances = Vec::new();
        hamming_all(&[0b101], &[0b101, 0b010, 0b100], &mut distances);
        assert_eq!(distances, [0, 3, 1]);
    }

    #[test]
    fn the_six_word_hamming_loop_counts_as_the_general_one() {
        let query = [u64::MAX, 0, 0b1011, 1 << 63, 7, 0];
        let bits: Vec<u64> = (0..60u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut fixed = Vec::new();
        hamming_fixed(&query, &bits, &mut fixed);
        let general: Vec<u16> = bits
            .chunks_exact(6)
            .map(|words| {
                words
                    .iter()
                    .zip(&query)
                    .map(|(a, b)| (a ^ b).count_ones() as u16)
                    .sum()
            })
            .collect();
        assert_eq!(fixed, general);
    }

    #[test]
    fn the_bit_pass_keeps_exactly_the_asked_number_when_distances_tie() {
        // 5,000 vectors of 64 dimensions over 20 centres: thousands share
        // each Hamming distance.
        let vectors = clustered(5_000, 64, 3);
        let index = VectorIndex::build((0, 0), &vectors);
        let query = &vectors[17].1;
        let kept = index.nearest_by_bits(query, 300);
        assert_eq!(kept.len(), 300);
        let mut q = Vec::new();
        sign_bits(&unit(query), &index.mean, &mut q);
        let mut distances = Vec::new();
        hamming_all(&q, &index.bits, &mut distances);
        let worst_kept = kept.iter().map(|&i| distances[i as usize]).max();
        let nearer_left_out = distances
            .iter()
            .enumerate()
            .filter(|(i, d)| Some(**d) < worst_kept && !kept.contains(&(*i as u32)))
            .count();
        assert_eq!(nearer_left_out, 0, "only ties at the cut may be left out");
    }

    #[test]
    fn the_search_compiled_for_this_cpu_answers_as_the_baseline_one() {
        let vectors = clustered(3_000, 384, 11);
        let index = VectorIndex::build((0, 0), &vectors);
        for (_, v) in vectors.iter().step_by(97) {
            assert_eq!(index.search(v, 8), index.two_passes(v, 8));
        }
    }
}
