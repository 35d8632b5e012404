//! `cargo bench --bench models`: the response cache's hit latency, the
//! prompt token count, and the budget gate's cost per call (reserve before,
//! settle after, both in the database) on SQLite and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{fresh_pg_database, report};
use soloist::agents::{Prompt, Reply, ResponseCache, count_prompt_tokens};
use soloist::config::{LoadOptions, ProviderKind, Settings};
use soloist::store::{Caps, LedgerEntry, Store};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("models bench: run it with `cargo bench --bench models`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = Settings::load(&LoadOptions::default()).unwrap();
        let system = include_str!("../prompts/system.md").repeat(3);
        let prompt = "Write a LinkedIn post announcing the new Website Audit price. ".repeat(8);
        let model = "openai/gpt-4o-mini".parse().unwrap();
        let request = Prompt {
            system: &system,
            prompt: &prompt,
            max_tokens: 900,
            temperature: Some(0.0),
            reply_schema: None,
        };
        let cache = ResponseCache::new(settings.models.cache_capacity, Duration::from_secs(3600));
        let reply = Reply {
            text: "x".repeat(800),
            input_tokens: 700,
            cached_input_tokens: 0,
            output_tokens: 200,
        };
        cache
            .insert(ResponseCache::key(&model, &request), reply)
            .await;
        let hits = time(20_000, || async {
            let key = ResponseCache::key(&model, &request);
            assert!(cache.get(&key).await.is_some());
        })
        .await;
        report(
            &format!(
                "cache hit (key of {} bytes built + lookup)",
                system.len() + prompt.len()
            ),
            &hits,
        );
        if cfg!(feature = "exact-tokens") {
            let counts = time(2_000, || async {
                count_prompt_tokens(ProviderKind::Openai, "gpt-4o-mini", &[&system, &prompt]);
            })
            .await;
            report("prompt token count (tiktoken, o200k)", &counts);
        }

        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        report(
            "budget gate, SQLite (reserve + settle with ledger row)",
            &gate(&sqlite).await,
        );
        match std::env::var("SOLOIST_TEST_PG_URL") {
            Ok(admin) => {
                let url = fresh_pg_database(&admin).await;
                report(
                    "budget gate, PostgreSQL (reserve + settle with ledger row)",
                    &gate(&url).await,
                );
            }
            Err(_) => println!("budget gate, PostgreSQL: skipped (SOLOIST_TEST_PG_URL unset)"),
        }
    });
}

async fn gate(url: &str) -> Vec<Duration> {
    let store = Store::open(url, 4).await.unwrap();
    let caps = Caps {
        daily_usd: 1e9,
        monthly_usd: 1e9,
    };
    let entry = LedgerEntry {
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        tier: "fast".into(),
        input_tokens: 700,
        output_tokens: 200,
        cost_usd: Some(0.0002),
        outcome: "ok".into(),
        ..LedgerEntry::default()
    };
    time(1_000, || async {
        let reservation = store
            .reserve_budget("2026-11-25", "2026-11", 0.001, caps)
            .await
            .unwrap()
            .unwrap();
        store
            .settle_budget(&reservation, Some(&entry))
            .await
            .unwrap();
    })
    .await
}

async fn time<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await;
        samples.push(started.elapsed());
    }
    samples
}
