//! `cargo bench --bench memory`: full-text retrieval p50/p95 at 10k chunks
//! on SQLite and PostgreSQL, and ingestion throughput (chunking, hashing,
//! the insert transaction; no embedding call). Pass a number after `--` to
//! change the chunk count (`cargo bench --bench memory -- --bench 100000`).
//!
//! PostgreSQL is measured when `SOLOIST_TEST_PG_URL` is set (see
//! `SOLOIST_TEST_SETUP_ONLY=1 scripts/test.sh`).

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
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        measure("SQLite", &sqlite, chunks).await;
        match std::env::var("SOLOIST_TEST_PG_URL") {
            Ok(admin) => measure("PostgreSQL", &fresh_pg_database(&admin).await, chunks).await,
            Err(_) => println!("PostgreSQL: skipped (SOLOIST_TEST_PG_URL unset)"),
        }
    });
}

async fn measure(backend: &str, url: &str, chunks: usize) {
    let store = Store::open(url, 4).await.unwrap();
    let memory = Memory::new(store, MemorySettings::default());
    let mut next = rng(0xbe_4c_11);
    let docs = chunks.div_ceil(SECTIONS);
    let started = Instant::now();
    for i in 0..docs {
        memory.ingest(&document(i, &mut next)).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{backend}: ingested {} chunks in {:.1?} ({:.0} chunks/s)",
        docs * SECTIONS,
        elapsed,
        (docs * SECTIONS) as f64 / elapsed.as_secs_f64()
    );
    let mut times = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let query: Vec<&str> = (0..6).map(|_| WORDS[next(WORDS.len())]).collect();
        let started = Instant::now();
        let hits = memory.retrieve(&query.join(" "), 4).await.unwrap();
        times.push(started.elapsed());
        assert!(!hits.is_empty());
    }
    report(&format!("{backend}: retrieval"), &times);
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{backend}: retrieval at {} chunks, top 4 of 6-word queries: p50={:?} p95={:?} max={:?}",
        docs * SECTIONS,
        at(0.5),
        at(0.95),
        times.last().copied().unwrap_or(Duration::ZERO)
    );
    memory.store().close().await;
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
fn document(i: usize, next: &mut impl FnMut(usize) -> usize) -> Document {
    let mut text = format!("# Document {i}\n\n");
    for s in 0..SECTIONS {
        let words: Vec<&str> = (0..80).map(|_| WORDS[next(WORDS.len())]).collect();
        text.push_str(&format!(
            "## {} {s}\n\n{}.\n\n",
            WORDS[next(WORDS.len())],
            words.join(" ")
        ));
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
