//! `cargo bench --bench memory`: retrieval p50/p95 at 10k chunks on SQLite
//! and PostgreSQL, full text alone and hybrid (full text fused with the
//! two-pass search over 384-dimension vectors), the vector search's recall
//! against an exact scan, the process's RSS with the index loaded, and
//! ingestion throughput (chunking, hashing, the insert transaction; no
//! embedding call), over two corpora: a small vocabulary (every query word
//! in most chunks: the worst case for full text) and a natural one (Zipf's
//! law over 20,000 words). Pass a number after `--` to
//! change the chunk count (`cargo bench --bench memory -- --bench 100000`).
//!
//! The vectors are made here (a hashed bag of words spread over 384
//! dimensions) and stored as an embedder would store them; the query's
//! vector is made the same way, so the figures are retrieval alone, not
//! the embedding request (a provider's round trip, costed in the ledger).
//!
//! PostgreSQL is measured when `SOLOIST_TEST_PG_URL` is set (see
//! `SOLOIST_TEST_SETUP_ONLY=1 scripts/test.sh`).
//!
//! Built with `--features local-embed` and with `SOLOIST_TEST_LOCAL_MODEL_DIR`
//! naming the model folder (scripts/test.sh fetches it), it also measures
//! the local embedder: load time, texts per second over chunk-sized texts
//! and one query's embedding time. `-- --bench local` measures that alone.

mod common;

use std::time::{Duration, Instant};

use common::{fresh_pg_database, report};
use soloist::memory::chunk::Format;
use soloist::memory::{Document, Memory, MemorySettings, SourceKind};
use soloist::store::Store;

/// Chunks per generated document (one section each).
const SECTIONS: usize = 10;
const QUERIES: usize = 300;

const WORDS: &[&str] = &[
    "price",
    "clients",
    "brand",
    "website",
    "audit",
    "booking",
    "month",
    "hours",
    "design",
    "studio",
    "project",
    "payment",
    "invoice",
    "deposit",
    "week",
    "team",
    "season",
    "shop",
    "order",
    "delivery",
    "quote",
    "service",
    "customer",
    "schedule",
    "review",
    "retainer",
    "workshop",
    "page",
    "mobile",
    "menu",
    "guide",
    "logo",
    "sprint",
    "discount",
    "minimum",
    "result",
    "growth",
    "local",
    "weekend",
    "morning",
    "plan",
    "support",
    "contract",
    "estimate",
    "visit",
    "tools",
    "garden",
    "lesson",
    "course",
    "room",
    "photos",
    "coffee",
    "Lisbon",
    "Porto",
    "bakery",
    "hostel",
    "restaurant",
    "signage",
    "packaging",
    "campaign",
    "portfolio",
    "renewal",
];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory bench: run it with `cargo bench --bench memory`");
        return;
    }
    let chunks: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(10_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let local_only = std::env::args().any(|a| a == "local");
    runtime.block_on(async {
        local_embeddings().await;
        if local_only {
            return;
        }
        // `SOLOIST_BENCH_CORPUS=small|natural` measures one of them.
        let only = std::env::var("SOLOIST_BENCH_CORPUS").unwrap_or_default();
        for corpus in [Corpus::Small, Corpus::Natural] {
            if !only.is_empty() && !format!("{corpus:?}").eq_ignore_ascii_case(&only) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let sqlite = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            );
            measure("SQLite", &sqlite, chunks, corpus).await;
            match std::env::var("SOLOIST_TEST_PG_URL") {
                Ok(admin) => {
                    let url = fresh_pg_database(&admin).await;
                    measure("PostgreSQL", &url, chunks, corpus).await
                }
                Err(_) => println!("PostgreSQL: skipped (SOLOIST_TEST_PG_URL unset)"),
            }
        }
    });
}

/// The words the chunks and queries are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Corpus {
    /// The 62 words of WORDS, each equally likely: every query word is in
    /// about 73% of the chunks, the worst case for full text.
    Small,
    /// WORDS followed by 20,000 made-up words, drawn by Zipf's law (the
    /// n-th word about 1/n as likely as the first), as words are in text.
    Natural,
}

/// Draws words for `corpus`.
struct Words {
    corpus: Corpus,
    vocabulary: Vec<String>,
    /// Cumulative Zipf weights (Natural).
    cumulative: Vec<f64>,
}

impl Words {
    fn new(corpus: Corpus) -> Self {
        let mut vocabulary: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
        let mut cumulative = Vec::new();
        if corpus == Corpus::Natural {
            const SYLLABLES: &[&str] = &[
                "ka", "to", "ri", "mu", "se", "na", "lo", "pe", "vi", "da", "go", "be", "fu", "ni",
                "so", "ra", "te", "mi", "zu", "ha",
            ];
            let mut next = rng(0x5eed);
            let mut seen: std::collections::HashSet<String> = vocabulary.iter().cloned().collect();
            while vocabulary.len() < WORDS.len() + 20_000 {
                let n = 2 + next(3);
                let word: String = (0..n).map(|_| SYLLABLES[next(SYLLABLES.len())]).collect();
                if seen.insert(word.clone()) {
                    vocabulary.push(word);
                }
            }
            let mut total = 0.0;
            for rank in 0..vocabulary.len() {
                total += 1.0 / (rank as f64 + 1.0);
                cumulative.push(total);
            }
        }
        Words {
            corpus,
            vocabulary,
            cumulative,
        }
    }

    fn draw(&self, next: &mut impl FnMut(usize) -> usize) -> &str {
        match self.corpus {
            Corpus::Small => &self.vocabulary[next(WORDS.len())],
            Corpus::Natural => {
                let total = self.cumulative.last().copied().unwrap_or(1.0);
                let at = next(1 << 30) as f64 / (1u64 << 30) as f64 * total;
                let i = self.cumulative.partition_point(|c| *c < at);
                &self.vocabulary[i.min(self.vocabulary.len() - 1)]
            }
        }
    }
}

async fn measure(backend: &str, url: &str, chunks: usize, corpus: Corpus) {
    let backend = &format!("{backend} ({corpus:?} vocabulary)");
    let words = Words::new(corpus);
    let store = Store::open(url, 4).await.unwrap();
    let memory = Memory::new(store, MemorySettings::default());
    let mut next = rng(0xbe_4c_11);
    let docs = chunks.div_ceil(SECTIONS);
    let started = Instant::now();
    for i in 0..docs {
        memory
            .ingest(&document(i, &words, &mut next))
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{backend}: ingested {} chunks in {:.1?} ({:.0} chunks/s)",
        docs * SECTIONS,
        elapsed,
        (docs * SECTIONS) as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    store_vectors(memory.store()).await;
    println!(
        "{backend}: stored {} vectors of {DIMS} dimensions in {:.1?}",
        docs * SECTIONS,
        started.elapsed()
    );
    if backend.starts_with("PostgreSQL") {
        // What autovacuum does as the table grows: full text reads its
        // word statistics (src/memory/db.rs, terms_within).
        sqlx::query("ANALYZE memory_chunks")
            .execute(memory.store().pool())
            .await
            .unwrap();
    }
    // What `soloist ingest` does at the end of a folder.
    let started = Instant::now();
    memory.compact_fulltext().await.unwrap();
    println!(
        "{backend}: full-text index compacted in {:.1?}",
        started.elapsed()
    );
    println!("{backend}: RSS before retrieval {} MiB", rss_mib());
    let queries: Vec<String> = (0..QUERIES)
        .map(|_| {
            (0..6)
                .map(|_| words.draw(&mut next))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for hybrid in [false, true] {
        let what = if hybrid { "hybrid" } else { "full text" };
        // The first hybrid query loads the index; it is timed apart.
        let started = Instant::now();
        let vector = embed(&queries[0]);
        let first = if hybrid {
            Some((MODEL, vector.as_slice()))
        } else {
            None
        };
        memory.retrieve_with(&queries[0], first, 4).await.unwrap();
        let cold = started.elapsed();
        // `SOLOIST_BENCH_ROUNDS` asks the queries again, for a profiler.
        let rounds = common::env_number("SOLOIST_BENCH_ROUNDS", 1);
        let mut times = Vec::with_capacity(QUERIES * rounds);
        for query in queries.iter().cycle().take(QUERIES * rounds) {
            let vector = embed(query);
            let started = Instant::now();
            let with = if hybrid {
                Some((MODEL, vector.as_slice()))
            } else {
                None
            };
            let hits = memory.retrieve_with(query, with, 4).await.unwrap();
            times.push(started.elapsed());
            assert!(!hits.is_empty());
        }
        report(&format!("{backend}: {what} retrieval"), &times);
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "{backend}: {what} retrieval at {} chunks, top 4 of 6-word queries: p50={:?} p95={:?} max={:?} (first query {:?}); RSS {} MiB",
            docs * SECTIONS,
            at(0.5),
            at(0.95),
            times.last().copied().unwrap_or(Duration::ZERO),
            cold,
            rss_mib()
        );
    }
    vector_recall(backend, &memory, &queries).await;
    memory.store().close().await;
}

/// How many of the exact scan's top 32 the two-pass vector search returns
/// (the candidates retrieval fuses).
async fn vector_recall(backend: &str, memory: &Memory, queries: &[String]) {
    let index = soloist::memory::vectors::index(memory.store(), MODEL)
        .await
        .unwrap();
    let (mut found, mut asked) = (0, 0);
    let (mut fast, mut exact) = (Vec::new(), Vec::new());
    for query in queries {
        let vector = embed(query);
        let started = Instant::now();
        let hits = index.search(&vector, 32);
        fast.push(started.elapsed());
        let started = Instant::now();
        let truth = index.search_exact(&vector, 32);
        exact.push(started.elapsed());
        found += hits
            .iter()
            .filter(|h| truth.iter().any(|t| t.0 == h.0))
            .count();
        asked += truth.len();
    }
    fast.sort();
    exact.sort();
    println!(
        "{backend}: vector search over {} vectors, top 32: two-pass p50={:?} (exact scan p50={:?}), recall against the exact scan {:.3}",
        index.len(),
        fast[fast.len() / 2],
        exact[exact.len() / 2],
        found as f64 / asked.max(1) as f64
    );
}

const MODEL: &str = "bench/hashed-384";
const DIMS: usize = 384;

/// A hashed bag of words over DIMS dimensions, each word spread over
/// three of them with signs (denser than one bucket, as real embeddings
/// are dense).
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        for _ in 0..3 {
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[((h >> 20) % DIMS as u64) as usize] += sign;
        }
    }
    v
}

/// Vectors for every stored chunk text, written as the embedder writes them.
async fn store_vectors(store: &Store) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT content_hash, MIN(text) FROM memory_chunks GROUP BY content_hash")
            .fetch_all(store.pool())
            .await
            .unwrap();
    for batch in rows.chunks(1000) {
        let vectors: Vec<(String, Vec<f32>)> = batch
            .iter()
            .map(|(hash, text)| (hash.clone(), embed(text)))
            .collect();
        soloist::memory::vectors::insert(store, MODEL, &vectors)
            .await
            .unwrap();
    }
}

/// The process's resident set, from /proc (0 where there is none).
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn rng(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |m| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % m
    }
}

/// A Markdown document of SECTIONS sections of about 80 words each.
fn document(i: usize, words: &Words, next: &mut impl FnMut(usize) -> usize) -> Document {
    let mut text = format!("# Document {i}\n\n");
    for s in 0..SECTIONS {
        let body: Vec<&str> = (0..80).map(|_| words.draw(next)).collect();
        let heading = words.draw(next);
        text.push_str(&format!("## {heading} {s}\n\n{}.\n\n", body.join(" ")));
    }
    Document {
        name: format!("bench/doc{i:05}.md"),
        kind: SourceKind::File,
        format: Format::Markdown,
        text,
        url: String::new(),
        origin: "bench".into(),
    }
}

/// The local embedder's figures (the `local-embed` build, with the model).
#[cfg(feature = "local-embed")]
async fn local_embeddings() {
    let Ok(dir) = std::env::var("SOLOIST_TEST_LOCAL_MODEL_DIR") else {
        println!("local embeddings: skipped (SOLOIST_TEST_LOCAL_MODEL_DIR unset)");
        return;
    };
    let rss_before = rss_mib();
    let started = Instant::now();
    let model = soloist::memory::local::shared(std::path::Path::new(&dir)).unwrap();
    println!(
        "local embeddings: model loaded in {:.2?}; RSS {} MiB before, {} MiB after",
        started.elapsed(),
        rss_before,
        rss_mib()
    );
    // Chunk-sized texts: a section of the bench documents (~80 words).
    let mut next = rng(0x10ca1);
    let texts: Vec<String> = (0..256)
        .map(|_| {
            (0..80)
                .map(|_| WORDS[next(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    model.embed(&texts[..8]).unwrap(); // warm-up
    for batch in [1usize, 64] {
        let started = Instant::now();
        let mut done = 0;
        for chunk in texts.chunks(batch) {
            model.embed(chunk).unwrap();
            done += chunk.len();
        }
        let elapsed = started.elapsed();
        println!(
            "local embeddings: {done} texts of 80 words, {batch} per call: {:.1} texts/s ({:.1?} per text); RSS {} MiB",
            done as f64 / elapsed.as_secs_f64(),
            elapsed / done as u32,
            rss_mib()
        );
    }
    let queries: Vec<String> = (0..100)
        .map(|_| {
            (0..6)
                .map(|_| WORDS[next(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut times = Vec::with_capacity(queries.len());
    for query in &queries {
        let started = Instant::now();
        model.embed(std::slice::from_ref(query)).unwrap();
        times.push(started.elapsed());
    }
    report("local embeddings: one 6-word query", &times);
}

#[cfg(not(feature = "local-embed"))]
async fn local_embeddings() {
    println!("local embeddings: skipped (built without --features local-embed)");
}
