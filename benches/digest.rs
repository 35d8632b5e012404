//! `cargo bench --bench digest`: time to build the daily digest (numbers
//! and chart, no model summary) on a database holding 100k ledger rows and
//! 10k runs spread over 60 days, on SQLite and (with `SOLOIST_TEST_PG_URL`)
//! PostgreSQL. Target: at most 100 ms.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{fresh_pg_database, report};
use soloist::config::{LoadOptions, Settings};
use soloist::store::Store;

const LEDGER_ROWS: i64 = 100_000;
const RUNS: i64 = 10_000;
const DAYS: i64 = 60;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("digest bench: run it with `cargo bench --bench digest`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = Settings::load(&LoadOptions::default()).unwrap();
        let now: DateTime<Utc> = "2027-02-10T10:00:00Z".parse().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        let store = Store::open(&url, 1).await.unwrap();
        bench("SQLite", &store, &settings, now).await;

        match std::env::var("SOLOIST_TEST_PG_URL") {
            Ok(admin) => {
                let url = fresh_pg_database(&admin).await;
                let store = Store::open(&url, 8).await.unwrap();
                bench("PostgreSQL", &store, &settings, now).await;
            }
            Err(_) => println!("PostgreSQL: skipped (set SOLOIST_TEST_PG_URL)"),
        }
    });
}

async fn bench(backend: &str, store: &Store, settings: &Settings, now: DateTime<Utc>) {
    let started = Instant::now();
    seed(store, now).await;
    println!(
        "{backend}: seeded {LEDGER_ROWS} ledger rows and {RUNS} runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut samples: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let digest = soloist::digest::build(store, settings, now).await.unwrap();
        samples.push(started.elapsed());
        assert!(!digest.chart_png.is_empty());
    }
    report(&format!("{backend}: digest (numbers + chart)"), &samples);
    let timezone: chrono_tz::Tz = settings.business.timezone.parse().unwrap();
    let mut numbers: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        soloist::digest::numbers(store, settings, timezone, now)
            .await
            .unwrap();
        soloist::digest::chart_data(store, settings, timezone, now)
            .await
            .unwrap();
        numbers.push(started.elapsed());
    }
    report(
        &format!("{backend}: of which SQL (numbers + chart data)"),
        &numbers,
    );
}

/// Rows spread evenly over the last DAYS days, in a few large transactions.
async fn seed(store: &Store, now: DateTime<Utc>) {
    let span = DAYS * 86_400_000;
    let start = now.timestamp_millis() - span;
    let flows = ["draft", "leads", "digest", "reply"];
    let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"];
    let tiers = ["quality", "fast", "router"];
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..RUNS {
        let at = start + span * i / RUNS;
        let status = ["completed", "failed", "waiting_approval", "completed"][(i % 4) as usize];
        sqlx::query(
            "INSERT INTO runs (id, flow, status, idempotency_key, platform, chat_id, requested_by,
                 input, created_at, updated_at)
             VALUES ($1, $2, $3, $1, 'console', 'console', 'Maya', '{}', $4, $5)",
        )
        .bind(format!("run-{i}"))
        .bind(flows[(i % 4) as usize])
        .bind(status)
        .bind(at)
        .bind(at + 60_000)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for i in 0..LEDGER_ROWS {
        let at = start + span * i / LEDGER_ROWS;
        sqlx::query(
            "INSERT INTO cost_ledger (run_id, flow, provider, model, tier, input_tokens,
                 cached_input_tokens, output_tokens, cost_usd, priced, latency_ms, cache_hit,
                 outcome, batched, saved_usd, created_at)
             VALUES ($1, $2, 'openai', $3, $4, 800, 0, 200, $5, 1, 900, $6, 'ok', 0, 0, $7)",
        )
        .bind(format!("run-{}", i % RUNS))
        .bind(flows[(i % 4) as usize])
        .bind(models[(i % 3) as usize])
        .bind(tiers[(i % 3) as usize])
        .bind(0.001 * (i % 7) as f64)
        .bind(i64::from(i % 5 == 0))
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}
