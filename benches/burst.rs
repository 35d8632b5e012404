//! `cargo bench --bench burst`: the draft burst. N chats each send one
//! `/draft` at once through the Rust fake Bot API
//! (`tests/api/fake_telegram.rs`) to `soloist run`'s Telegram service, with
//! the fake model answering at once (`tests/api/fake_llm.rs`) and the
//! outbox's rate limits lifted. For SQLite and PostgreSQL, N = 200 and
//! N = 1,000, it prints:
//!
//! - drafts/s (all N offers delivered, from the first update injected);
//! - p50/p99 from an update's injection to its offer reaching the fake;
//! - the first offer's latency;
//! - the share of offers delivered in each tenth of the wall time (a wave
//!   at the end shows as most of them in the last tenths);
//! - peak RSS (VmHWM) of the process running the case: soloist and the two
//!   fakes share it, so soloist's own share is lower;
//! - the model calls made (exactly N when no step is paid twice).
//!
//! Each case runs in a child process of its own, so each peak is its own.
//! PostgreSQL cases need `SOLOIST_TEST_PG_URL`; without it they are skipped.

mod common;
#[allow(dead_code)]
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/fake_telegram.rs"]
mod fake_telegram;
#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;
#[path = "common/in_process_telegram.rs"]
mod in_process_telegram;

use std::time::Duration;

use helpers::Db;
use tokio::time::Instant;

const FIRST_CHAT: i64 = 10_000;
const CASE: &str = "--burst-case";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CASE) {
        let (db, n) = parse_case(&args[at + 1]);
        run_case(db, n);
        return;
    }
    // `cargo test --all-targets` runs bench binaries too; only measure
    // under `cargo bench`, which passes --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("burst bench: run it with `cargo bench --bench burst`");
        return;
    }
    let has_pg = std::env::var("SOLOIST_TEST_PG_URL").is_ok();
    let sizes: Vec<i64> = std::env::var("BURST_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 1000]);
    for db in ["sqlite", "postgres"] {
        if db == "postgres" && !has_pg {
            println!("burst bench: PostgreSQL skipped (SOLOIST_TEST_PG_URL unset)");
            continue;
        }
        for n in &sizes {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .arg(CASE)
                .arg(format!("{db}:{n}"))
                .status()
                .unwrap();
            assert!(status.success(), "the {db} N={n} case failed");
        }
    }
}

fn parse_case(case: &str) -> (Db, i64) {
    let (db, n) = case.split_once(':').unwrap();
    let db = if db == "sqlite" {
        Db::Sqlite
    } else {
        Db::Postgres
    };
    (db, n.parse().unwrap())
}

fn run_case(db: Db, n: i64) {
    let runtime = common::two_worker_runtime();
    runtime.block_on(burst(db, n));
}

async fn burst(db: Db, n: i64) {
    let (test, tg, shutdown) =
        in_process_telegram::soloist_on_fake_telegram(db, FIRST_CHAT..FIRST_CHAT + n, false, |s| {
            s.models.timeout_secs = 60;
        })
        .await;
    let rss_before = rss_kib("VmRSS");

    let started = Instant::now();
    let mut injected = Vec::with_capacity(n as usize);
    for chat in FIRST_CHAT..FIRST_CHAT + n {
        tg.user_says(chat, "/draft a post about the new audit price");
        injected.push((chat, Instant::now()));
    }
    // Only the messages sent since the last look are read: rescanning
    // (and parsing the buttons of) every message each time took a tenth of
    // the two cores soloist is measured on.
    let mut offers: Vec<(i64, Instant)> = Vec::with_capacity(n as usize);
    let mut seen = 0;
    let offers = loop {
        tg.inspect(|s| {
            offers.extend(
                s.sent[seen..]
                    .iter()
                    .filter(|m| m.button("Approve").is_some())
                    .map(|m| (m.chat_id, m.sent_at)),
            );
            seen = s.sent.len();
        });
        if offers.len() >= n as usize {
            break offers;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {n} offers after 10 minutes",
            offers.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let wall = offers.iter().map(|(_, at)| *at).max().unwrap() - started;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = test.llm.calls();

    let offered: std::collections::HashMap<i64, Instant> = offers.iter().copied().collect();
    let mut latencies: Vec<Duration> = injected
        .iter()
        .map(|(chat, at)| offered[chat].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let first = offers.iter().map(|(_, at)| *at).min().unwrap() - started;
    let mut tenths = [0usize; 10];
    for (_, sent) in &offers {
        let share = (*sent - started).as_secs_f64() / wall.as_secs_f64();
        tenths[((share * 10.0) as usize).min(9)] += 1;
    }
    let tenths: Vec<String> = tenths
        .iter()
        .map(|c| format!("{:.0}%", *c as f64 * 100.0 / offers.len() as f64))
        .collect();
    let name = match db {
        Db::Sqlite => "SQLite",
        Db::Postgres => "PostgreSQL",
    };
    println!(
        "draft burst, {name}, N={n}: {:.0} drafts/s (wall {wall:.2?}); update to offer p50={:.2?} p99={:.2?}; first offer after {first:.2?}; per tenth of the wall time [{}]; RSS before {} MiB, peak {} MiB; model calls {calls} for {n} drafts",
        n as f64 / wall.as_secs_f64(),
        at(0.5),
        at(0.99),
        tenths.join(" "),
        rss_before / 1024,
        rss_kib("VmHWM") / 1024,
    );
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A `/proc/self/status` figure in KiB (0 where there is none).
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
